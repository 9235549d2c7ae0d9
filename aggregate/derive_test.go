package aggregate

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
)

func TestDeriveAtReadTime(t *testing.T) {
	set, err := Compile([]config.Feature{
		{Name: "orders", Agg: "count", Event: "Order Completed"},
		{Name: "last_order_at", Agg: "last", Event: "Order Completed", Field: "timestamp"},
		{Name: "days_since_last_order", Expr: "last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1"},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	st := set.NewState()
	if _, err := set.Apply(st, &event.Event{Type: event.Track, Event: "Order Completed", UserID: "1", MessageID: "m", Timestamp: t0}); err != nil {
		t.Fatal(err)
	}
	vals := set.Values(st, t0.Add(time.Hour), nil)
	if vals[2] != 0.0 {
		t.Fatalf("days since, an hour later: %v", vals[2])
	}
	// Ten days on, with no new event, the stored vector still says 0;
	// Derive brings the derived value to now and leaves the others alone.
	set.Derive(vals, t0.Add(10*24*time.Hour+time.Minute))
	if vals[2] != 10.0 || vals[0] != 1.0 {
		t.Fatalf("after Derive: %v", vals)
	}
	// Wrong length: nothing happens.
	set.Derive(vals[:2], t0)
}

// DeriveOne gives each feature the value Derive gives it, at any time and
// from any values, and reads only its Inputs.
func TestDeriveOneEqualsDerive(t *testing.T) {
	set, err := Compile([]config.Feature{
		{Name: "orders", Agg: "count", Event: "Order Completed"},
		{Name: "revenue", Agg: "sum", Event: "Order Completed", Field: "properties.revenue"},
		{Name: "last_order_at", Agg: "last", Event: "Order Completed", Field: "timestamp"},
		{Name: "country", Agg: "last", Field: "traits.country"},
		{Name: "days", Expr: "last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1"},
		{Name: "aov", Expr: "orders > 0 ? revenue / orders : 0"},
		{Name: "late_big", Expr: "days > 30 && aov > 10"},
		{Name: "local", Expr: `country == "DE" ? days : -1`},
		{Name: "bad", Expr: "1 / 0"},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string][]string{
		"orders": {"orders"}, "days": {"last_order_at"}, "aov": {"orders", "revenue"},
		"late_big": {"orders", "revenue", "last_order_at"}, "local": {"last_order_at", "country"}, "bad": nil,
	}
	for name, want := range inputs {
		var got []string
		for _, j := range set.Inputs(set.Index(name)) {
			got = append(got, set.Names()[j])
		}
		if fmt.Sprint(got) != fmt.Sprint(sortedByIndex(set, want)) {
			t.Errorf("Inputs(%s) = %v, want %v", name, got, want)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for range 2000 {
		vals := make([]any, len(set.Names()))
		vals[0] = float64(rng.IntN(4))
		vals[1] = rng.Float64() * 100
		if rng.IntN(3) > 0 {
			vals[2] = float64(t0.Add(-time.Duration(rng.Int64N(int64(90 * 24 * time.Hour)))).UnixMilli())
		} else {
			vals[2] = 0.0
		}
		vals[3] = []any{"DE", "FR", nil}[rng.IntN(3)]
		for i := 4; i < len(vals); i++ { // stale derived values: ignored
			vals[i] = rng.Float64()
		}
		at := t0.Add(time.Duration(rng.Int64N(int64(60 * 24 * time.Hour))))
		want := slices.Clone(vals)
		set.Derive(want, at)
		before := slices.Clone(vals)
		for i := range vals {
			if got := set.DeriveOne(i, vals, at); !reflect.DeepEqual(got, want[i]) {
				t.Fatalf("DeriveOne(%s) at %v of %v = %v, Derive gives %v", set.Names()[i], at, vals, got, want[i])
			}
		}
		if !reflect.DeepEqual(vals, before) {
			t.Fatal("DeriveOne changed its values")
		}
	}
	if v := set.DeriveOne(4, make([]any, 3), t0); v != nil {
		t.Fatalf("wrong length: %v", v)
	}
}

func sortedByIndex(set *Set, names []string) []string {
	out := slices.Clone(names)
	slices.SortFunc(out, func(a, b string) int { return set.Index(a) - set.Index(b) })
	return out
}
