package stream

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// A retried event is dropped after a restart (the seen-id filter is
// rebuilt from Pebble) and after a restore into an empty data dir (from
// the changelog).
func TestDuplicatesAfterRestartAndRestore(t *testing.T) {
	e := newEnv(t, nil)
	want := func(n float64) {
		t.Helper()
		v, err := e.store.Get(context.Background(), entity, "a")
		if err != nil {
			t.Fatal(err)
		}
		if got := v.Features["orders_lifetime"]; got != n {
			t.Fatalf("orders_lifetime = %v, want %v", got, n)
		}
	}
	run := func(dir string) {
		t.Helper()
		p := e.processor(Options{}, dir)
		stop := e.run(p)
		e.waitCaughtUp(20*time.Second, p)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), "a")
	e.produce(eventRecord(t, order("a", "m1", t0, 10)))
	run(dir)
	want(1)
	e.produce(eventRecord(t, order("a", "m1", t0, 10)), eventRecord(t, order("a", "m2", t0, 10)))
	run(dir) // restart
	want(2)
	e.produce(eventRecord(t, order("a", "m1", t0, 10)), eventRecord(t, order("a", "m2", t0, 10)), eventRecord(t, order("a", "m3", t0, 10)))
	run(filepath.Join(t.TempDir(), "b")) // restore
	want(3)
}

func TestSeenFilterHasNoFalseNegatives(t *testing.T) {
	f := newSeenFilter(0)
	const n = 200_000
	for i := range n {
		f.add(fmt.Sprintf("id-%d", i))
	}
	for i := range n {
		if !f.mayHave(fmt.Sprintf("id-%d", i)) {
			t.Fatalf("id-%d added but not found", i)
		}
	}
	if !f.full() {
		t.Errorf("%d ids in %d bits: want a rebuild", n, len(f.words)*64)
	}
	fp := 0
	for i := range 100_000 {
		if f.mayHave(fmt.Sprintf("other-%d", i)) {
			fp++
		}
	}
	// An overfull filter only costs lookups; a sized one few.
	g := newSeenFilter(n)
	for i := range n {
		g.add(fmt.Sprintf("id-%d", i))
	}
	gfp := 0
	for i := range 100_000 {
		if g.mayHave(fmt.Sprintf("other-%d", i)) {
			gfp++
		}
	}
	if gfp > 500 {
		t.Errorf("sized filter: %d false positives in 100000, want under 0.5%%", gfp)
	}
	t.Logf("false positives in 100000: overfull %d, sized %d", fp, gfp)
}
