package aggregate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
)

// TestMergeProperty: for random events split at a random point, State(A)
// merged with State(B) answers the same values as State(A+B), for every
// agg, windowed and lifetime, including distinct beyond its exact bound
// (a high-cardinality field) and after B went through the binary format
// (as a backfill seed does).
func TestMergeProperty(t *testing.T) {
	rounds := 60
	if testing.Short() {
		rounds = 20
	}
	for round := range rounds {
		seed := uint64(round)*104729 + 3
		t.Run(strconv.Itoa(round), func(t *testing.T) {
			checkMerge(t, rand.New(rand.NewPCG(seed, seed>>5)))
		})
	}
}

func checkMerge(t *testing.T, r *rand.Rand) {
	defs := randomDefs(r)
	// Distinct over unique ids: beyond the exact bound in the whole
	// stream, and in one half or both depending on the split.
	for _, w := range []time.Duration{0, time.Hour} {
		defs = append(defs, config.Feature{Name: fmt.Sprintf("uniq%d", len(defs)), Agg: "distinct",
			Field: "properties.u", Window: config.Duration(w)})
	}
	// last_by_key over the whole map, with a cap that drops keys.
	defs = append(defs, config.Feature{Name: "bykey", Agg: "last_by_key", Field: "properties", N: 1 + r.IntN(4)})
	// Sorted events (as a backfill replays them) may use a lateness, and
	// tiles then drop in A+B that the halves keep; shuffled ones need none.
	sorted := r.IntN(2) == 0
	lateness := time.Duration(0)
	if sorted {
		lateness = []time.Duration{0, 5 * time.Second, time.Minute}[r.IntN(3)]
	}
	set, err := Compile(defs, Options{AllowedLateness: lateness})
	if err != nil {
		t.Fatal(err)
	}
	n := 200 + r.IntN(2500)
	grid := []int64{1, 16, 1000}[r.IntN(3)]
	clock := int64(r.IntN(100000))
	evs := make([]*event.Event, n)
	for i := range evs {
		clock += int64(r.IntN(3000)) / grid * grid
		e := randomEvent(r, clock-int64(r.IntN(4000))/grid*grid)
		e.Properties["u"] = float64(r.IntN(n)) // about 0.63 n distinct values
		e.Properties[fmt.Sprintf("k%d", r.IntN(6))] = float64(r.IntN(100))
		evs[i] = e
	}
	if sorted {
		slices.SortStableFunc(evs, func(a, b *event.Event) int { return a.Timestamp.Compare(b.Timestamp) })
	}
	k := r.IntN(n + 1)
	all, a, b := set.NewState(), set.NewState(), set.NewState()
	for i, e := range evs {
		if _, err := set.Apply(all, e); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		half := a
		if i >= k {
			half = b
		}
		if _, err := set.Apply(half, e); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	// B travels as a seed: through bytes, into a Set of its own features
	// only would be the backfill's case; the same Set is the stream's.
	b, err = set.DecodeState(b.AppendBinary(nil))
	if err != nil {
		t.Fatal(err)
	}
	merged := 0
	for i := range defs {
		fp, ok := set.Fingerprint(i)
		if !ok {
			t.Fatalf("%s: no fingerprint", defs[i].Name)
		}
		// Two features may share a fingerprint; Merge takes both at once.
		if j := slices.IndexFunc(defs[:i], func(d config.Feature) bool { f, _ := set.Fingerprint(set.Index(d.Name)); return f == fp }); j >= 0 {
			continue
		}
		if set.Merge(a, b, fp) {
			merged++
		}
	}
	if k < n && merged == 0 && !b.Empty() {
		t.Fatal("Merge changed nothing though B holds state")
	}
	if a.NewestMillis() != all.NewestMillis() {
		t.Fatalf("newest %d, want %d", a.NewestMillis(), all.NewestMillis())
	}
	newest := all.NewestMillis()
	var got, want []any
	for _, q := range []int64{newest, newest + 1, newest + 999, newest + 61_000, newest + 1_800_000, newest + 7_200_000} {
		now := time.UnixMilli(q)
		got = set.Values(a, now, got)
		want = set.Values(all, now, want)
		for i := range defs {
			if !sameValue(got[i], want[i]) {
				t.Fatalf("%s (%s %s window %s, n %d) at newest+%d, split %d/%d: merged %#v, all %#v",
					defs[i].Name, defs[i].Agg, defs[i].Field, defs[i].Window, defs[i].N, q-newest, k, n, got[i], want[i])
			}
		}
	}
	// The distinct over unique ids went past its exact bound: the merge
	// took the sketch path, not only the exact one.
	if n > 2*distinctExact && set.Values(all, time.UnixMilli(newest), nil)[len(defs)-2].(float64) <= distinctExact {
		t.Fatalf("distinct stayed exact with %d events", n)
	}
}

// sameValue is equality, with floats equal up to rounding (sums add in
// another order when merged).
func sameValue(a, b any) bool {
	x, okx := a.(float64)
	y, oky := b.(float64)
	if okx && oky {
		return x == y || math.Abs(x-y) <= 1e-9*max(math.Abs(x), math.Abs(y))
	}
	return reflect.DeepEqual(a, b)
}

func TestMergeTwiceCountsTwice(t *testing.T) {
	set, err := Compile([]config.Feature{{Name: "n", Agg: "count"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := set.NewState(), set.NewState()
	set.Apply(b, &event.Event{Type: event.Track, Event: "x", MessageID: "1", Timestamp: time.UnixMilli(1000)})
	fp, _ := set.Fingerprint(0)
	set.Merge(a, b, fp)
	if got := set.Values(a, time.UnixMilli(2000), nil)[0]; got != 1.0 {
		t.Fatalf("after one merge: %v", got)
	}
	set.Merge(a, b, fp)
	if got := set.Values(a, time.UnixMilli(2000), nil)[0]; got != 2.0 {
		t.Fatalf("after two merges: %v (Merge is not idempotent; the stream's seeded marks make it once)", got)
	}
	if set.Merge(a, set.NewState(), fp) {
		t.Fatal("merging an empty state changed something")
	}
}

// MergeAll merges each feature once, also when two features share a
// definition (and so a fingerprint and a state), and leaves derived
// features to be derived.
func TestMergeAllOncePerFingerprint(t *testing.T) {
	set, err := Compile([]config.Feature{
		{Name: "a", Agg: "count", Event: "x"},
		{Name: "b", Agg: "count", Event: "x"}, // same definition as a
		{Name: "s", Agg: "sum", Event: "x", Field: "properties.v"},
		{Name: "d", Expr: "a + s"},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dst, src := set.NewState(), set.NewState()
	set.Apply(dst, &event.Event{Type: event.Track, Event: "x", MessageID: "1", Timestamp: time.UnixMilli(1000), Properties: map[string]any{"v": 2.0}})
	set.Apply(src, &event.Event{Type: event.Track, Event: "x", MessageID: "2", Timestamp: time.UnixMilli(1500), Properties: map[string]any{"v": 3.0}})
	if !set.MergeAll(dst, src) {
		t.Fatal("MergeAll of a non-empty state changed nothing")
	}
	got := set.Values(dst, time.UnixMilli(2000), nil)
	if !reflect.DeepEqual(got, []any{2.0, 2.0, 5.0, 7.0}) {
		t.Errorf("values after MergeAll = %v, want [2 2 5 7]", got)
	}
	if set.MergeAll(dst, set.NewState()) {
		t.Error("MergeAll of an empty state changed something")
	}
}
