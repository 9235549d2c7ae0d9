package aggregate

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
)

func refreshSet(t *testing.T) *Set {
	t.Helper()
	set, err := Compile([]config.Feature{
		{Name: "orders", Agg: "count", Event: "Order Completed"},
		{Name: "revenue", Agg: "sum", Event: "Order Completed", Field: "properties.revenue"},
		{Name: "last_order_at", Agg: "last", Event: "Order Completed", Field: "timestamp"},
		{Name: "first_seen", Agg: "first", Field: "timestamp"},
		{Name: "aov", Expr: "orders > 0 ? revenue / orders : 0"},
		{Name: "days_since_last_order", Expr: "last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1"},
		{Name: "weeks_since_last_order", Expr: "days_since_last_order >= 0 ? floor(days_since_last_order / 7) : -1"},
		{Name: "tenure_days", Expr: "first_seen > 0 ? (now - first_seen) / 86400000 : 0"},
		{Name: "big_spender", Expr: "aov > 100"},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestRefresherOnlyWhatReadsNow(t *testing.T) {
	set := refreshSet(t)
	if r := set.Refresher([]string{"orders", "aov", "big_spender", "nope"}); r != nil {
		t.Fatalf("no wanted feature reads now, got a Refresher for %v", r.Outputs())
	}
	r := set.Refresher([]string{"orders", "weeks_since_last_order", "aov", "tenure_days", "weeks_since_last_order"})
	if got, want := r.Outputs(), []string{"weeks_since_last_order", "tenure_days"}; !slices.Equal(got, want) {
		t.Fatalf("outputs %v, want %v", got, want)
	}
	// days_since_last_order is computed on the way, from the stored
	// last_order_at; the stored (stale) days_since_last_order is not read.
	if !slices.Contains(r.stored, "last_order_at") || slices.Contains(r.stored, "days_since_last_order") {
		t.Fatalf("stored inputs %v", r.stored)
	}
}

// TestRefresherMatchesDerive: for random stored vectors, some features
// missing, Refresh gives what Derive gives for the features it computes.
func TestRefresherMatchesDerive(t *testing.T) {
	set := refreshSet(t)
	names := set.Names()
	want := []string{"tenure_days", "days_since_last_order", "weeks_since_last_order", "orders"}
	r := set.Refresher(want)
	rnd := rand.New(rand.NewPCG(7, 9))
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	dst := make([]any, len(r.Outputs()))
	for iter := 0; iter < 2000; iter++ {
		stored := map[string]any{}
		for _, n := range names {
			switch rnd.IntN(4) {
			case 0: // absent
			case 1:
				stored[n] = nil
			default:
				switch n {
				case "last_order_at", "first_seen":
					stored[n] = float64(base.Add(-time.Duration(rnd.IntN(1000)) * time.Hour).UnixMilli())
				default:
					stored[n] = float64(rnd.IntN(50))
				}
			}
		}
		now := base.Add(time.Duration(rnd.IntN(100)) * time.Hour)
		vals := make([]any, len(names))
		for i, n := range names {
			vals[i] = stored[n]
		}
		set.Derive(vals, now)
		r.Refresh(stored, now, dst)
		for k, n := range r.Outputs() {
			if got, exp := dst[k], vals[slices.Index(names, n)]; got != exp {
				t.Fatalf("iteration %d, %s: Refresh %v, Derive %v (stored %v, now %v)", iter, n, got, exp, stored, now)
			}
		}
	}
}

func BenchmarkRefresh(b *testing.B) {
	set, err := Compile([]config.Feature{
		{Name: "last_order_at", Agg: "last", Event: "Order Completed", Field: "timestamp"},
		{Name: "days_since_last_order", Expr: "last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1"},
	}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	r := set.Refresher([]string{"days_since_last_order"})
	stored := map[string]any{"last_order_at": float64(time.Now().Add(-72 * time.Hour).UnixMilli())}
	dst := make([]any, 1)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		r.Refresh(stored, now, dst)
	}
}
