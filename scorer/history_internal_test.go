package scorer

import (
	"testing"
	"time"
)

// TestCountHistoryBounds samples for two hours: the history keeps the last
// hour and the point before it, one a minute while the count holds, and
// never more than historyMaxPoints.
func TestCountHistoryBounds(t *testing.T) {
	h := newCountHistory()
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	step := 10 * time.Second
	end := t0.Add(2 * time.Hour)
	for at := t0; !at.After(end); at = at.Add(step) {
		n := int64(5)
		if at.After(t0.Add(90 * time.Minute)) {
			n = int64(at.Sub(t0) / step) // changes at every sample
		}
		h.add("user/s", at.UnixMilli(), n)
	}
	pts, since := h.get("user/s", end, time.Hour)
	cutoff := end.Add(-time.Hour).UnixMilli()
	if since != t0.UnixMilli() {
		t.Errorf("since %d, want the first sample %d", since, t0.UnixMilli())
	}
	if pts[0][0] > cutoff || pts[1][0] <= cutoff {
		t.Errorf("want one point at or before the hour's start, then the hour: %v %v", pts[0], pts[1])
	}
	// 30 min held at 5 (one a minute) then 30 min of changes (6 a minute).
	if len(pts) < 200 || len(pts) > 1+30+180+1 {
		t.Errorf("%d points for the hour", len(pts))
	}
	for i := 1; i < len(pts); i++ {
		if pts[i][0] <= pts[i-1][0] {
			t.Fatalf("out of order at %d: %v %v", i, pts[i-1], pts[i])
		}
	}
	if last, _ := h.get("user/s", end, 15*time.Minute); last[0][0] > end.Add(-15*time.Minute).UnixMilli() {
		t.Errorf("15m: first point %v is after the period's start", last[0])
	}

	// A fast sampler of a busy segment stays bounded, and says how far back
	// it still knows.
	fast := newCountHistory()
	var at time.Time
	for i := range 5000 {
		at = t0.Add(time.Duration(i) * 50 * time.Millisecond)
		fast.add("user/s", at.UnixMilli(), int64(i))
	}
	pts, since = fast.get("user/s", at, time.Hour)
	if len(pts) != historyMaxPoints || since != pts[0][0] || cap(fast.series["user/s"].points) > 2*historyMaxPoints {
		t.Errorf("fast sampler: %d points (cap %d), since %d, first %v", len(pts), cap(fast.series["user/s"].points), since, pts[0])
	}

	fast.keep(map[string]bool{})
	if pts, since := fast.get("user/s", at, time.Hour); len(pts) != 0 || since != at.UnixMilli() {
		t.Errorf("forgotten segment: %v since %d", pts, since)
	}
}
