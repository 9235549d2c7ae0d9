package aggregate

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
)

// TestMatchesReference feeds random event streams (several entities, out of
// order within the allowed lateness, some too late) through random feature
// sets and checks every value, at many query times, against a brute-force
// computation over the raw events that applies the documented tile rule.
// It also checks NextChange, Expire and the binary round trip on the way.
func TestMatchesReference(t *testing.T) {
	rounds := 80
	if testing.Short() {
		rounds = 20
	}
	for round := range rounds {
		seed := uint64(round)*7919 + 1
		t.Run(strconv.Itoa(round), func(t *testing.T) {
			checkAgainstReference(t, rand.New(rand.NewPCG(seed, seed>>3)))
		})
	}
}

var refWindows = []time.Duration{0, time.Second, 7 * time.Second, time.Minute, 10 * time.Minute}

func randomDefs(r *rand.Rand) []config.Feature {
	aggs := []string{"count", "sum", "avg", "min", "max", "first", "last", "distinct", "last_n"}
	var defs []config.Feature
	n := 6 + r.IntN(14)
	for i := range n {
		d := config.Feature{Name: fmt.Sprintf("f%d", i), Agg: aggs[r.IntN(len(aggs))],
			Window: config.Duration(refWindows[r.IntN(len(refWindows))])}
		switch r.IntN(5) {
		case 0:
			d.Event = "a"
		case 1:
			d.Event = "b"
		case 2:
			d.Type = "page"
		case 3:
			d.Where = "properties.x > 5"
		}
		switch d.Agg {
		case "count":
			if r.IntN(3) == 0 {
				d.Field = "properties.p"
			}
		case "sum", "avg", "min", "max":
			d.Field = "properties.x"
			if r.IntN(5) == 0 {
				d.Field = "timestamp"
			}
		default:
			d.Field = []string{"properties.p", "properties.x", "timestamp"}[r.IntN(3)]
		}
		if d.Agg == "last_n" {
			d.N = 1 + r.IntN(4)
		}
		defs = append(defs, d)
	}
	return defs
}

func randomEvent(r *rand.Rand, ts int64) *event.Event {
	e := &event.Event{Type: event.Track, MessageID: fmt.Sprintf("%08x", r.Uint32()),
		Timestamp: time.UnixMilli(ts).UTC(), Properties: map[string]any{}}
	switch r.IntN(4) {
	case 0:
		e.Event = "a"
	case 1:
		e.Event = "b"
	case 2:
		e.Type, e.Name = event.Page, "Home"
	}
	switch r.IntN(6) {
	case 0: // missing
	case 1:
		e.Properties["x"] = strconv.Itoa(r.IntN(10)) // numeric string
	case 2:
		e.Properties["x"] = "abc"
	default:
		e.Properties["x"] = float64(r.IntN(20) - 5)
	}
	switch r.IntN(5) {
	case 0:
	case 1:
		e.Properties["p"] = nil
	default:
		e.Properties["p"] = string(rune('a' + r.IntN(12)))
	}
	return e
}

type refEntity struct {
	events []*event.Event // accepted, in order
	newest int64
	seen   bool
	st     *State
	floor  int64 // queries from here on are answered exactly
}

func checkAgainstReference(t *testing.T, r *rand.Rand) {
	defs := randomDefs(r)
	lateness := []time.Duration{0, 5 * time.Second, time.Minute}[r.IntN(3)]
	set, err := Compile(defs, Options{AllowedLateness: lateness})
	if err != nil {
		t.Fatal(err)
	}
	late := lateness.Milliseconds()
	ents := make([]*refEntity, 1+r.IntN(3))
	for i := range ents {
		ents[i] = &refEntity{st: set.NewState(), floor: math.MinInt64}
	}
	// Times on a coarse grid hit tile edges (multiples of 16ms, 116ms, 1s) often.
	grid := []int64{1, 4, 16, 116, 1000}[r.IntN(5)]
	clock := int64(r.IntN(100000)) - 50000
	var got []any
	for step := range 300 {
		en := ents[r.IntN(len(ents))]
		clock += int64(r.IntN(3000)) / grid * grid
		ts := clock - int64(r.IntN(int(max(late, 1000)*5/4)))/grid*grid
		e := randomEvent(r, ts)

		wantChanged, wantErr := false, false
		if en.seen && late > 0 && ts < en.newest-late {
			wantErr = true
		} else {
			for _, d := range defs {
				if _, ok := refMatch(d, e); ok {
					wantChanged = true
				}
			}
		}
		changed, err := set.Apply(en.st, e)
		if wantErr != (err != nil) || wantErr && !errors.Is(err, ErrTooLate) || changed != wantChanged {
			t.Fatalf("step %d: Apply(ts=%d, newest=%d) = %v, %v; want changed %v, too late %v",
				step, ts, en.newest, changed, err, wantChanged, wantErr)
		}
		if wantChanged {
			en.events = append(en.events, e)
			if !en.seen || ts > en.newest {
				en.newest, en.seen = ts, true
			}
		}
		if got := en.st.NewestMillis(); en.seen && got != en.newest {
			t.Fatalf("NewestMillis = %d, want %d", got, en.newest)
		}
		if !en.seen {
			continue
		}
		if late > 0 {
			en.floor = max(en.floor, en.newest-late)
		}
		// Query at random times and at the edges around events.
		for range 3 {
			var q int64
			switch r.IntN(4) {
			case 0:
				q = en.newest + int64(r.IntN(700000))
			case 1:
				x := en.events[r.IntN(len(en.events))].Timestamp.UnixMilli()
				q = x + refWindows[1+r.IntN(len(refWindows)-1)].Milliseconds() + int64(r.IntN(3)) - 1
			case 2:
				q = en.newest
			default:
				q = en.newest - int64(r.IntN(int(max(late, 1))))
			}
			if late == 0 && q < en.newest {
				q = en.newest
			}
			q = max(q, en.floor)
			now := time.UnixMilli(q)
			got = set.Values(en.st, now, got)
			want := refValues(set, defs, en.events, q)
			for i := range defs {
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Fatalf("step %d: %s (%s %s window %s, n %d, event %q, type %q, where %q) at %d: got %#v, want %#v\nevents: %s",
						step, defs[i].Name, defs[i].Agg, defs[i].Field, defs[i].Window, defs[i].N, defs[i].Event,
						defs[i].Type, defs[i].Where, q, got[i], want[i], dumpEvents(en.events))
				}
			}
			checkNextChange(t, set, en.st, q, got)
		}
		switch r.IntN(20) {
		case 0: // round trip through bytes
			b := en.st.AppendBinary(nil)
			st, err := set.DecodeState(b)
			if err != nil {
				t.Fatalf("step %d: decode: %v", step, err)
			}
			if b2 := st.AppendBinary(nil); string(b2) != string(b) {
				t.Fatalf("step %d: re-encoding differs", step)
			}
			en.st = st
		case 1: // expire a little ahead of the newest event
			at := en.newest + int64(r.IntN(120000))
			set.Expire(en.st, time.UnixMilli(at))
			en.floor = max(en.floor, at-late)
		}
	}
}

// checkNextChange: windowed values hold still until NextChange.
func checkNextChange(t *testing.T, set *Set, st *State, q int64, at []any) {
	t.Helper()
	next, ok := set.NextChange(st, time.UnixMilli(q))
	probe := []int64{q + 1, q + 3_600_000}
	end := int64(math.MaxInt64)
	if ok {
		end = next.UnixMilli()
		if end <= q {
			t.Fatalf("NextChange(%d) = %d, not after", q, end)
		}
		probe = []int64{q + 1, (q + end) / 2, end - 1}
	}
	for _, p := range probe {
		if p <= q || p >= end {
			continue
		}
		v := set.Values(st, time.UnixMilli(p), nil)
		if !reflect.DeepEqual(v, at) {
			t.Fatalf("values changed between %d and %d though NextChange = %v, %v:\n%v\n%v", q, p, next, ok, at, v)
		}
	}
}

func dumpEvents(evs []*event.Event) string {
	s := ""
	for _, e := range evs {
		s += fmt.Sprintf("\n  %d %s/%s %s %v", e.Timestamp.UnixMilli(), e.Type, e.Event, e.MessageID, e.Properties)
	}
	return s
}

// refMatch says whether e feeds feature d, and with what value.
func refMatch(d config.Feature, e *event.Event) (any, bool) {
	if d.Event != "" && d.Event != e.Event || d.Type != "" && d.Type != string(e.Type) {
		return nil, false
	}
	if d.Where != "" { // properties.x > 5: only a real number compares
		x, ok := e.Properties["x"].(float64)
		if !ok || !(x > 5) {
			return nil, false
		}
	}
	if d.Field == "" {
		return nil, true
	}
	var v any
	var ok bool
	if d.Field == "timestamp" {
		v, ok = float64(e.Timestamp.UnixMilli()), true
	} else {
		v, ok = e.Properties[d.Field[len("properties."):]]
	}
	if !ok || v == nil {
		return nil, false
	}
	switch d.Agg {
	case "sum", "avg", "min", "max":
		x, ok := event.Number(v)
		if !ok || math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, false
		}
		return x, true
	}
	return v, true
}

// refValues computes each feature at q over the raw events: an event
// counts when its tile (W/60 ms, (k*tile, (k+1)*tile]) started before q
// and ends after q - W; lifetime features count every event.
func refValues(set *Set, defs []config.Feature, events []*event.Event, q int64) []any {
	out := make([]any, len(defs))
	for i, d := range defs {
		w := d.Window.D().Milliseconds()
		tile := w / 60
		type hit struct {
			ts int64
			id string
			v  any
		}
		var all, in []hit
		for _, e := range events {
			v, ok := refMatch(d, e)
			if !ok {
				continue
			}
			h := hit{e.Timestamp.UnixMilli(), e.MessageID, v}
			all = append(all, h)
			if w == 0 {
				in = append(in, h)
				continue
			}
			k := int64(math.Floor(float64(h.ts-1) / float64(tile)))
			if k*tile < q && (k+1)*tile > q-w {
				in = append(in, h)
			}
		}
		later := func(a, b hit) bool { return a.ts > b.ts || a.ts == b.ts && a.id > b.id }
		switch d.Agg {
		case "count":
			out[i] = float64(len(in))
		case "sum", "avg", "min", "max":
			sum, lo, hi := 0.0, math.Inf(1), math.Inf(-1)
			for _, h := range in {
				x := h.v.(float64)
				sum += x
				lo, hi = min(lo, x), max(hi, x)
			}
			switch {
			case d.Agg == "sum":
				out[i] = sum
			case len(in) == 0:
				out[i] = nil
			case d.Agg == "avg":
				out[i] = sum / float64(len(in))
			case d.Agg == "min":
				out[i] = lo
			default:
				out[i] = hi
			}
		case "first", "last":
			if len(in) == 0 {
				if d.Field == "timestamp" {
					out[i] = 0.0
				}
				continue
			}
			best := in[0]
			for _, h := range in[1:] {
				if d.Agg == "last" && later(h, best) || d.Agg == "first" && later(best, h) {
					best = h
				}
			}
			out[i] = best.v
		case "distinct":
			seen := map[string]bool{}
			for _, h := range in {
				seen[fmt.Sprintf("%T:%v", h.v, h.v)] = true
			}
			out[i] = float64(len(seen))
		case "last_n":
			// The n latest of all events, then those that count at q.
			sort.SliceStable(all, func(a, b int) bool { return later(all[a], all[b]) })
			if len(all) > d.N {
				all = all[:d.N]
			}
			list := []any{}
			for _, h := range all {
				k := int64(0)
				if w > 0 {
					k = int64(math.Floor(float64(h.ts-1) / float64(tile)))
				}
				if w == 0 || k*tile < q && (k+1)*tile > q-w {
					list = append(list, h.v)
				}
			}
			out[i] = list
		}
	}
	return out
}

// TestResetIsNew: a State reset after one entity's events and then given
// another's is, byte for byte and value for value, the State a new one
// becomes; and what was read from it before the reset stays as it was.
func TestResetIsNew(t *testing.T) {
	for round := range 40 {
		r := rand.New(rand.NewPCG(uint64(round)+101, 7))
		set, err := Compile(randomDefs(r), Options{AllowedLateness: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		now := time.UnixMilli(1_000_000)
		feed := func(st *State, n int) {
			ts := int64(900_000)
			for range n {
				ts += int64(r.IntN(2000))
				if _, err := set.Apply(st, randomEvent(r, ts-int64(r.IntN(30_000)))); err != nil && !errors.Is(err, ErrTooLate) {
					t.Fatal(err)
				}
			}
		}
		reused := set.NewState()
		feed(reused, 50+r.IntN(200))
		before := set.Values(reused, now, nil)
		kept := fmt.Sprint(before)
		reused.Reset()
		if !reused.Empty() || reused.NewestMillis() != math.MinInt64 {
			t.Fatalf("round %d: a reset State is not empty", round)
		}

		// The same events into both: the generator restarted from one seed.
		seed := r.Uint64()
		fresh := set.NewState()
		r = rand.New(rand.NewPCG(seed, 9))
		feed(fresh, 80)
		r = rand.New(rand.NewPCG(seed, 9))
		feed(reused, 80)
		if a, b := reused.AppendBinary(nil), fresh.AppendBinary(nil); !reflect.DeepEqual(a, b) {
			t.Fatalf("round %d: reset then fed encodes %x, a new State %x", round, a, b)
		}
		for _, at := range []time.Time{now, now.Add(time.Minute), now.Add(time.Hour)} {
			if a, b := set.Values(reused, at, nil), set.Values(fresh, at, nil); !reflect.DeepEqual(a, b) {
				t.Fatalf("round %d at %v: reset then fed %v, a new State %v", round, at, a, b)
			}
		}
		if got := fmt.Sprint(before); got != kept {
			t.Fatalf("round %d: values read before the reset changed: %s, were %s", round, got, kept)
		}
	}
}
