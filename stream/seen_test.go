package stream

import (
	"context"
	"path/filepath"
	"strings"
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

// A seen part's keys read back as written; part 0 keeps the keys of a
// batch written before parts, and a changelog key that is not an offset
// (and part) is refused by name.
func TestSeenKeys(t *testing.T) {
	for _, c := range []struct {
		off  int64
		part int
		cl   string
	}{{0, 0, "__seen/0"}, {41, 0, "__seen/41"}, {41, 3, "__seen/41.3"}, {1 << 40, 70000, "__seen/1099511627776.70000"}} {
		if k := seenChangelogKey(c.off, c.part); k != c.cl {
			t.Errorf("seenChangelogKey(%d, %d) = %s, want %s", c.off, c.part, k, c.cl)
		}
		off, part, err := parseSeenChangelogKey(c.cl[len(clSeenPrefix):])
		if err != nil || off != c.off || part != c.part {
			t.Errorf("parseSeenChangelogKey(%s) = %d, %d, %v", c.cl, off, part, err)
		}
		off, part, ok := splitSeenKey(seenKey(c.off, c.part)[len(pkBatch):])
		if !ok || off != c.off || part != c.part {
			t.Errorf("splitSeenKey(seenKey(%d, %d)) = %d, %d, %v", c.off, c.part, off, part, ok)
		}
	}
	if k := seenKey(41, 0); string(k) != string(pkBatch)+"\x00\x00\x00\x00\x00\x00\x00\x29" {
		t.Errorf("seenKey(41, 0) = %q, the key before parts", k)
	}
	if a, b, c := seenKey(41, 0), seenKey(41, 2), seenKey(42, 0); string(a) >= string(b) || string(b) >= string(c) {
		t.Errorf("a batch's parts do not sort together, before the next batch: %q %q %q", a, b, c)
	}
	for _, bad := range []string{"x", "41.", "41.0", "41.-1", "-1", "41.x"} {
		if _, _, err := parseSeenChangelogKey(bad); err == nil || !strings.Contains(err.Error(), "seen ids key") {
			t.Errorf("parseSeenChangelogKey(%q): %v, want an error naming the key", bad, err)
		}
	}
}
