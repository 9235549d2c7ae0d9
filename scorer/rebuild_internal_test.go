package scorer

import (
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestWalkBack rebuilds counts from the current one and the changes before
// it, whatever order the partitions gave them in.
func TestWalkBack(t *testing.T) {
	const since, until = 1000, 9000
	f := func(changes []segmentChange, now int64, want [][2]int64) {
		t.Helper()
		got := walkBack(changes, map[string]int64{"user/s": now}, since, until)["user/s"]
		if !slices.Equal(got, want) {
			t.Errorf("walkBack(%v, now %d):\n got %v\nwant %v", changes, now, got, want)
		}
	}
	enter := func(at int64) segmentChange { return segmentChange{key: "user/s", at: at, delta: 1} }
	exit := func(at int64) segmentChange { return segmentChange{key: "user/s", at: at, delta: -1} }

	// No change in the hour: the count held.
	f(nil, 7, [][2]int64{{since, 7}})
	// Enters and exits, given out of time order.
	f([]segmentChange{enter(3000), exit(5000), enter(2000)}, 10, [][2]int64{{since, 9}, {2000, 10}, {3000, 11}, {5000, 10}})
	// An entity that entered in the hour then left: back where it started.
	f([]segmentChange{enter(2000), exit(4000)}, 0, [][2]int64{{since, 0}, {2000, 1}, {4000, 0}})
	// Changes in the same millisecond make one point, the count after them.
	f([]segmentChange{enter(2000), enter(2000), exit(2000)}, 5, [][2]int64{{since, 4}, {2000, 5}})
	// A change at the start is a point there, not a count before it.
	f([]segmentChange{enter(since)}, 1, [][2]int64{{since, 1}})
	// Before since: already in the count at since.
	f([]segmentChange{enter(500), exit(3000)}, 2, [][2]int64{{since, 3}, {3000, 2}})
	// After until (a clock ahead): counted, at until.
	f([]segmentChange{enter(3000), enter(12000)}, 2, [][2]int64{{since, 0}, {3000, 1}, {until, 2}})
	// Other segments and entities are not this segment's changes.
	f([]segmentChange{enter(3000), {key: "user/t", at: 4000, delta: 1}, {key: "account/s", at: 5000, delta: -1}}, 1,
		[][2]int64{{since, 0}, {3000, 1}})

	// Segments not configured (not in now) get no history.
	got := walkBack([]segmentChange{{key: "user/gone", at: 2000, delta: 1}}, map[string]int64{"user/s": 1}, since, until)
	if _, ok := got["user/gone"]; ok || len(got) != 1 {
		t.Errorf("unconfigured segment rebuilt: %v", got)
	}
}

func TestDecodeChange(t *testing.T) {
	at := time.UnixMilli(1_795_000_000_123)
	f := func(value string, want segmentChange, wantOK bool) {
		t.Helper()
		got, ok := decodeChange(&kgo.Record{Value: []byte(value), Timestamp: at})
		if ok != wantOK || got != want {
			t.Errorf("decodeChange(%s) = %v %v, want %v %v", value, got, ok, want, wantOK)
		}
	}
	f(`{"change_id":"c1","segment":"s","entity":"user","id":"7","change":"enter","at":"2026-11-22T10:00:00Z"}`,
		segmentChange{key: "user/s", at: at.UnixMilli(), delta: 1}, true)
	f(`{"segment":"s","entity":"account","id":"7","change":"exit"}`, segmentChange{key: "account/s", at: at.UnixMilli(), delta: -1}, true)
	f(`{"segment":"s","id":"7","change":"exit"}`, segmentChange{key: "user/s", at: at.UnixMilli(), delta: -1}, true)
	f(`{"segment":"s","id":"7","change":"moved"}`, segmentChange{}, false)
	f(`{"id":"7","change":"enter"}`, segmentChange{}, false)
	f(`not json`, segmentChange{}, false)
}

// TestCountHistorySeed: rebuilt points read as if sampled, ahead of the
// points the sampler took meanwhile, and bounded as sampled ones are.
func TestCountHistorySeed(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC).UnixMilli()
	until := t0 + time.Hour.Milliseconds()
	sec := time.Second.Milliseconds()
	h := newCountHistory()
	// The sampler began just before the rebuild read its anchor.
	h.add("user/s", until-5*sec, 4)
	h.add("user/s", until+5*sec, 5)
	h.seed("user/s", [][2]int64{{t0, 1}, {t0 + 15*sec, 2}, {t0 + 30*time.Minute.Milliseconds(), 4}}, 10*time.Second, until)
	pts, since := h.get("user/s", time.UnixMilli(until+5*sec), time.Hour)
	if since != t0 {
		t.Errorf("since %d, want the rebuild's start %d", since, t0)
	}
	for i := 1; i < len(pts); i++ {
		if pts[i][0] <= pts[i-1][0] {
			t.Fatalf("out of order at %d: %v", i, pts)
		}
	}
	// Sampled at 10s: the 2 is seen at t0+20s, then a heartbeat a minute
	// while it holds.
	if !slices.Equal(pts[:3], [][2]int64{{t0, 1}, {t0 + 20*sec, 2}, {t0 + 80*sec, 2}}) {
		t.Errorf("first points %v", pts[:3])
	}
	// From the sampler's first point on, only the sampler's points (its 4
	// goes as any unchanged sample does: the rebuilt 4 is under a minute old).
	n := len(pts)
	if pts[n-1] != [2]int64{until + 5*sec, 5} || pts[n-2][0] >= until-5*sec || pts[n-2][1] != 4 {
		t.Errorf("last points %v, want the sampler's", pts[n-2:])
	}
	if len(pts) < 60 || len(pts) > 70 {
		t.Errorf("%d points for an hour mostly held: want about one a minute", len(pts))
	}

	// Nothing sampled yet: the seeded series ends at until, and the
	// sampler goes on after it.
	h = newCountHistory()
	h.seed("user/s", [][2]int64{{t0, 3}}, 10*time.Second, until)
	h.add("user/s", until+10*sec, 6)
	pts, since = h.get("user/s", time.UnixMilli(until+10*sec), time.Hour)
	if since != t0 || pts[len(pts)-1] != [2]int64{until + 10*sec, 6} || pts[len(pts)-2][1] != 3 {
		t.Errorf("seed then sample: since %d, %v", since, pts)
	}
}
