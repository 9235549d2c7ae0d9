package aggregate

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
)

func TestReads(t *testing.T) {
	f := func(defs []config.Feature, want []string, wantAll bool) {
		t.Helper()
		set, err := Compile(defs, Options{})
		if err != nil {
			t.Fatal(err)
		}
		got, all := set.Reads()
		if !slices.Equal(got, want) || all != wantAll {
			t.Fatalf("Reads() = %q, %v; want %q, %v", got, all, want, wantAll)
		}
	}
	f([]config.Feature{{Name: "n", Agg: "count"}}, []string{"timestamp"}, false)
	f([]config.Feature{
		{Name: "orders", Agg: "count", Event: "Order Completed"},
		{Name: "revenue", Agg: "sum", Event: "Order Completed", Field: "properties.revenue"},
		{Name: "country", Agg: "last", Field: "traits.address.country"},
		{Name: "pages", Agg: "count", Type: "page", Event: "*"},
		{Name: "aov", Expr: "orders > 0 ? revenue / orders : 0"},
	}, []string{"timestamp", "event", "properties.revenue", "messageId", "traits.address.country", "type"}, false)
	f([]config.Feature{{Name: "big", Agg: "count", Where: "properties.total > 100"}}, []string{"timestamp"}, true)
}

// TestProjectedApply: the Set folds an event decoded with its Reads
// projection exactly as the fully decoded one, for random feature sets
// and events carrying keys no feature reads.
func TestProjectedApply(t *testing.T) {
	for round := range 40 {
		r := rand.New(rand.NewPCG(uint64(round), 17))
		defs := randomDefs(r)
		if round%2 == 0 {
			for i := range defs {
				defs[i].Where = "" // the projected path proper
			}
		}
		set, err := Compile(defs, Options{AllowedLateness: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		p := event.NewProjection(set.Reads())
		full, proj := set.NewState(), set.NewState()
		ts := int64(1_700_000_000_000)
		for range 200 {
			ts += r.Int64N(2000) - 500
			ev := randomEvent(r, ts)
			ev.UserID = "u"
			if ev.Type == event.Track && ev.Event == "" {
				ev.Event = "c" // a record needs a name; no filter takes it
			}
			ev.Properties["unread"] = map[string]any{"deep": []any{1.0, "x"}}
			ev.Traits = map[string]any{"country": "FR"}
			ev.Context = map[string]any{"ip": "1.2.3.4"}
			rec, err := ev.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			want, err := event.Unmarshal(rec)
			if err != nil {
				t.Fatal(err)
			}
			var got event.Event
			if err := p.Unmarshal(rec, &got); err != nil {
				t.Fatal(err)
			}
			c1, err1 := set.Apply(full, want)
			c2, err2 := set.Apply(proj, &got)
			if c1 != c2 || (err1 == nil) != (err2 == nil) {
				t.Fatalf("round %d: Apply gave %v, %v on the full event and %v, %v projected\n%s", round, c1, err1, c2, err2, rec)
			}
		}
		if a, b := full.AppendBinary(nil), proj.AppendBinary(nil); !bytes.Equal(a, b) {
			t.Fatalf("round %d: states differ", round)
		}
		now := time.UnixMilli(ts)
		if a, b := set.Values(full, now, nil), set.Values(proj, now, nil); !reflect.DeepEqual(a, b) {
			t.Fatalf("round %d: values %v, projected %v", round, a, b)
		}
	}
}

// TestPrefetchChangesNothing: Prefetch only reads.
func TestPrefetchChangesNothing(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	set, err := Compile(randomDefs(r), Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := set.NewState()
	ts := int64(1_700_000_000_000)
	for range 100 {
		ts += r.Int64N(1000)
		ev := randomEvent(r, ts)
		before := st.AppendBinary(nil)
		set.Prefetch(st, ev)
		if !bytes.Equal(before, st.AppendBinary(nil)) {
			t.Fatal("Prefetch changed the state")
		}
		if _, err := set.Apply(st, ev); err != nil {
			t.Fatal(err)
		}
	}
}
