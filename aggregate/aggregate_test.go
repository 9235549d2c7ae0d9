package aggregate

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
)

func TestTileOf(t *testing.T) {
	f := func(ts, tile, want int64) {
		t.Helper()
		if got := tileOf(ts, tile); got != want {
			t.Errorf("tileOf(%d, %d) = %d, want %d", ts, tile, got, want)
		}
	}
	f(1, 1000, 0)
	f(1000, 1000, 0) // a tile's end belongs to it: (0, 1000]
	f(1001, 1000, 1)
	f(0, 1000, -1)
	f(-1, 1000, -1)
	f(-999, 1000, -1)
	f(-1000, 1000, -2) // (-2000, -1000]
	f(-1001, 1000, -2)
	f(123456, 0, 0) // lifetime
}

func TestCounts(t *testing.T) {
	f := func(idx, tile, window, at int64, want bool) {
		t.Helper()
		if got := counts(idx, tile, window, at); got != want {
			t.Errorf("counts(tile %d of %dms, window %d, at %d) = %v, want %v", idx, tile, window, at, got, want)
		}
	}
	// Tile 0 of a 60s window covers (0, 1000].
	f(0, 1000, 60000, 0, false)      // starts at the query time: future
	f(0, 1000, 60000, 1, true)       // started
	f(0, 1000, 60000, 60999, true)   // ends after 60999 - 60000
	f(0, 1000, 60000, 61000, false)  // ends at 61000 - 60000: out
	f(5, 1000, 0, -1e12, true)       // lifetime counts always
	f(-1, 1000, 60000, 59999, true)  // (-1000, 0] still in at 59.999s
	f(-1, 1000, 60000, 60000, false) // and out at 60s
}

func TestFloorDiv(t *testing.T) {
	f := func(a, b, want int64) {
		t.Helper()
		if got := floorDiv(a, b); got != want {
			t.Errorf("floorDiv(%d, %d) = %d, want %d", a, b, got, want)
		}
	}
	f(7, 2, 3)
	f(-7, 2, -4)
	f(-8, 2, -4)
	f(0, 5, 0)
	f(math.MinInt64+1, 1, math.MinInt64+1)
}

func TestParseField(t *testing.T) {
	f := func(path, wantErr string) {
		t.Helper()
		_, err := parseField(path, false)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, wantErr) || (wantErr == "") != (got == "") {
			t.Errorf("parseField(%q) error %q, want %q", path, got, wantErr)
		}
	}
	f("properties.revenue", "")
	f("traits.address.country", "")
	f("context.page.url", "")
	f("timestamp", "")
	f("event", "")
	f("properties", "name a key inside properties")
	f("properties..x", "empty segment")
	f("revenue", `unknown path "revenue"`)
	f("timestamp.x", "timestamp has no fields")
}

func TestFieldLookupMatchesEventLookup(t *testing.T) {
	e := &event.Event{Type: event.Track, Event: "Order", MessageID: "m", Timestamp: time.UnixMilli(5),
		Properties: map[string]any{"a": map[string]any{"b": 2.0}, "n": nil},
		Traits:     map[string]any{"country": "FR"}}
	for _, path := range []string{"properties.a.b", "properties.a", "properties.a.c", "properties.n",
		"properties.x.y", "traits.country", "context.x", "event", "type", "userId", "timestamp", "messageId"} {
		fp, err := parseField(path, false)
		if err != nil {
			t.Fatal(err)
		}
		v1, ok1 := fp.lookup(e)
		v2, ok2 := e.Lookup(path)
		if ok1 != ok2 || !reflect.DeepEqual(v1, v2) {
			t.Errorf("%s: lookup = %v, %v; event.Lookup = %v, %v", path, v1, ok1, v2, ok2)
		}
	}
}

func TestHashValue(t *testing.T) {
	f := func(a, b any, same bool) {
		t.Helper()
		ha, _ := hashValue(a)
		hb, _ := hashValue(b)
		if (ha == hb) != same {
			t.Errorf("hash(%#v) == hash(%#v) is %v, want %v", a, b, ha == hb, same)
		}
	}
	f("1", 1.0, false)
	f(1.0, 1, true)
	f(0.0, math.Copysign(0, -1), true)
	f(true, 1.0, false)
	f("a", "a", true)
	f([]any{"a"}, []any{"a"}, true)
	f(map[string]any{"a": 1.0, "b": 2.0}, map[string]any{"b": 2.0, "a": 1.0}, true)
	f([]any{"a"}, "a", false)
	if _, ok := hashValue(nil); ok {
		t.Error("nil hashed")
	}
}

func TestHLLError(t *testing.T) {
	f := func(n int) {
		t.Helper()
		var s hll
		for i := range n {
			h, _ := hashValue(fmt.Sprint("v", i))
			s.add(h)
		}
		got := s.estimate()
		if rel := math.Abs(got-float64(n)) / float64(n); rel > 0.05 { // 3 standard errors
			t.Errorf("estimate of %d = %v (%.1f%% off)", n, got, rel*100)
		}
	}
	f(1001)
	f(5000)
	f(20000)
	f(200000)
}

func TestInsertItem(t *testing.T) {
	f := func(n int, in []int64, want []int64) {
		t.Helper()
		var list []item
		for i, ts := range in {
			list = insertItem(list, n, item{ts: ts, id: fmt.Sprint(i)})
		}
		var got []int64
		for _, it := range list {
			got = append(got, it.ts)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("insertItem(n=%d, %v) = %v, want %v", n, in, got, want)
		}
	}
	f(3, []int64{1, 2, 3, 4}, []int64{4, 3, 2})
	f(3, []int64{4, 3, 2, 1}, []int64{4, 3, 2})
	f(3, []int64{2, 4, 1, 3}, []int64{4, 3, 2})
	f(1, []int64{5, 5}, []int64{5}) // same ts: the larger messageId ("1") is later
	f(2, []int64{5}, []int64{5})
}

func TestNormalize(t *testing.T) {
	f := func(in, want any) {
		t.Helper()
		if got := normalize(in); !reflect.DeepEqual(got, want) {
			t.Errorf("normalize(%#v) = %#v, want %#v", in, got, want)
		}
	}
	f(1, 1.0)
	f(2.5, 2.5)
	f(true, 1.0)
	f(false, 0.0)
	f(math.Inf(1), nil)
	f(math.NaN(), nil)
	f("x", "x")
	f(nil, nil)
	f([]any{1.0}, []any{1.0})
}

func TestCompileErrorsAreListed(t *testing.T) {
	_, err := Compile([]config.Feature{
		{Name: "aov", Expr: "revenue_3d / orders", Line: 7},
		{Name: "orders", Agg: "count", Line: 9},
	}, Options{})
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 {
		t.Fatalf("err = %v", err)
	}
	want := FeatureError{Name: "aov", Line: 7, Key: "expr", Msg: "unknown name revenue_3d (line 1, column 1)"}
	if errs[0] != want {
		t.Errorf("got %#v, want %#v", errs[0], want)
	}
	if got := err.Error(); got != `feature "aov": expr: unknown name revenue_3d (line 1, column 1)` {
		t.Errorf("message %q", got)
	}
}

func TestCompileAll(t *testing.T) {
	_, err := CompileAll([]config.Feature{
		{Name: "orders", Agg: "count"},
		{Name: "seats", Agg: "max", Field: "traits.seats", Entity: "account"},
		{Name: "x", Expr: "seats * 2"},
	}, Options{})
	if err == nil || !strings.Contains(err.Error(), "feature seats belongs to entity account") {
		t.Fatalf("err = %v", err)
	}
	sets, err := CompileAll([]config.Feature{
		{Name: "orders", Agg: "count"},
		{Name: "seats", Agg: "max", Field: "traits.seats", Entity: "account"},
		{Name: "x", Expr: "orders * 2"},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := sets["user"].Names(); !reflect.DeepEqual(got, []string{"orders", "x"}) {
		t.Errorf("user features %v", got)
	}
	if got := sets["account"].Names(); !reflect.DeepEqual(got, []string{"seats"}) || sets["account"].Entity() != "account" {
		t.Errorf("account features %v", got)
	}
	if sets["user"].Index("x") != 1 || sets["user"].Index("nope") != -1 {
		t.Error("Index")
	}
}

// The example config compiles, and its kinds are what the stream and the
// models expect.
func TestExampleConfig(t *testing.T) {
	set, err := Compile(exampleFeatures(t), Options{AllowedLateness: 7 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Kind{"orders_1h": Number, "avg_order_value_30d": Number, "last_order_at": Number,
		"days_since_last_order": Number, "recent_categories": List, "country": Any, "first_seen": Number,
		"products_viewed_24h": Number}
	for name, k := range want {
		if got := set.Kinds()[set.Index(name)]; got != k {
			t.Errorf("%s: kind %v, want %v", name, got, k)
		}
	}
	if !set.UsesNow() {
		t.Error("days_since_last_order reads now")
	}
}

// Apply allocates nothing in the steady state, Values only for its results.
func TestApplyDoesNotAllocate(t *testing.T) {
	set, err := Compile(exampleFeatures(t)[:21], Options{AllowedLateness: 7 * 24 * time.Hour}) // no where
	if err != nil {
		t.Fatal(err)
	}
	evs := benchEvents(3000)
	st := set.NewState()
	for _, e := range evs[:2000] {
		set.Apply(st, e)
	}
	i := 2000
	allocs := testing.AllocsPerRun(500, func() {
		set.Apply(st, evs[i%len(evs)])
		i++
	})
	if allocs > 0.1 {
		t.Errorf("Apply allocates %.2f times per event", allocs)
	}
}
