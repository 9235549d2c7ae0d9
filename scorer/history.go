package scorer

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/valyala/fasthttp"
)

// The history of segment counts answers GET /v1/segments?history=1h, so a
// dashboard opened for the first time shows the last hour's trend rather
// than a flat line: the browser alone knows only what it has watched.
const (
	defaultHistoryInterval = 10 * time.Second
	// historyKeep is the longest ?history= a client may ask for.
	historyKeep = time.Hour
	// historyHeartbeat keeps a point at least this often while a count
	// holds still, as the dashboard's own record does, so a client can tell
	// "unchanged" from "not sampled".
	historyHeartbeat = time.Minute
	// historyMaxPoints bounds one segment's memory whatever the interval:
	// an hour at the default interval is 361 points. Past it the oldest
	// points go, and the segment's history_since moves up with them.
	historyMaxPoints = 1024
)

var historyErrors = promauto.NewCounter(prometheus.CounterOpts{
	Name: "pulse_scorer_segment_history_errors_total",
	Help: "Segment counts the history sampler could not read from the online store (the point is skipped).",
})

// WithHistoryInterval sets how often the server reads every segment's count
// for GET /v1/segments?history=, overriding the default 10s.
func WithHistoryInterval(d time.Duration) Option {
	return func(s *Server) {
		if d > 0 {
			s.historyInterval = d
		}
	}
}

// countHistory keeps, per segment, its count over the last hour. It is safe
// for concurrent use: one sampler writes, requests read.
type countHistory struct {
	mu     sync.Mutex
	series map[string]*countSeries // by entity + "/" + segment
}

// countSeries is one segment's points, oldest first: every point of the
// last hour and the last one before it, so a line can start at the hour's
// left edge.
type countSeries struct {
	since  int64 // unix ms from which the points are complete
	points [][2]int64
}

func newCountHistory() *countHistory {
	return &countHistory{series: map[string]*countSeries{}}
}

func historyKey(cs *config.Segment) string { return segEntity(cs) + "/" + cs.Name }

// add records segment key's count n at unix ms t, keeping the point only
// when the count changed or the heartbeat is due.
func (h *countHistory) add(key string, t, n int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cs := h.series[key]
	if cs == nil {
		cs = &countSeries{since: t}
		h.series[key] = cs
	}
	cs.push(t, n)
	cs.trim(t)
}

// push appends the point (t, n) when the count changed or the heartbeat is due.
func (cs *countSeries) push(t, n int64) {
	if k := len(cs.points); k == 0 || cs.points[k-1][1] != n || t-cs.points[k-1][0] >= historyHeartbeat.Milliseconds() {
		cs.points = append(cs.points, [2]int64{t, n})
	}
}

// trim drops the points older than an hour before t but the last of them,
// and the oldest past historyMaxPoints.
func (cs *countSeries) trim(t int64) {
	cutoff := t - historyKeep.Milliseconds()
	drop := 0
	for drop+1 < len(cs.points) && cs.points[drop+1][0] <= cutoff {
		drop++
	}
	if over := len(cs.points) - drop - historyMaxPoints; over > 0 {
		drop += over
		cs.since = cs.points[drop][0]
	}
	if drop > 0 {
		// Shift rather than reslice, so the array does not creep forward
		// and grow without bound.
		cs.points = cs.points[:copy(cs.points, cs.points[drop:])]
	}
}

// seed puts a rebuilt history of key before what the sampler recorded:
// points are the exact counts (oldest first, the first at the time from
// which they are complete), read as if sampled every interval up to until,
// the time of the count they end at. The sampler may have begun before
// until; its points are the newer reading and win.
func (h *countHistory) seed(key string, points [][2]int64, interval time.Duration, until int64) {
	if len(points) == 0 || interval <= 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	sampled := h.series[key]
	first := until + 1
	if sampled != nil && len(sampled.points) > 0 {
		first = min(first, sampled.points[0][0])
	}
	cs := &countSeries{since: points[0][0]}
	step, i := interval.Milliseconds(), 0
	for t := points[0][0]; t < first; t += step {
		t = min(t, until)
		for i+1 < len(points) && points[i+1][0] <= t {
			i++
		}
		cs.push(t, points[i][1])
		if t == until {
			break
		}
	}
	if sampled != nil {
		cs.since = min(cs.since, sampled.since)
		for _, p := range sampled.points {
			cs.push(p[0], p[1])
		}
	}
	if k := len(cs.points); k > 0 {
		cs.trim(cs.points[k-1][0])
	}
	h.series[key] = cs
}

// keep forgets the segments not in keys (removed by a reload).
func (h *countHistory) keep(keys map[string]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k := range h.series {
		if !keys[k] {
			delete(h.series, k)
		}
	}
}

// get returns key's points from now-d on, led by the last point before,
// and since, the unix ms from which they are complete (now when the
// segment has not been sampled yet).
func (h *countHistory) get(key string, now time.Time, d time.Duration) (points [][2]int64, since int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cs := h.series[key]
	if cs == nil {
		return [][2]int64{}, now.UnixMilli()
	}
	cutoff := now.Add(-d).UnixMilli()
	i := 0
	for i+1 < len(cs.points) && cs.points[i+1][0] <= cutoff {
		i++
	}
	return append([][2]int64{}, cs.points[i:]...), cs.since
}

// sample reads every configured segment's count each interval until ctx
// ends. A store error skips the point; it is counted, and logged once per
// streak of failing rounds so an outage does not flood the log.
func (s *Server) sample(ctx context.Context) {
	t := time.NewTicker(s.historyInterval)
	defer t.Stop()
	failing := 0
	for {
		err := s.sampleOnce(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			if failing == 0 {
				s.log.Warn("segment history: cannot read segment counts; retrying each interval", "interval", s.historyInterval, "err", err)
			}
			failing++
		case err == nil && failing > 0:
			s.log.Info("segment history: segment counts readable again", "failed_rounds", failing)
			failing = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sampleOnce records one point per segment of the config in force and
// forgets segments a reload removed. It returns the first store error.
func (s *Server) sampleOnce(ctx context.Context) error {
	cfg := s.cfgNow.Load()
	keys := make(map[string]bool, len(cfg.Segments))
	var first error
	for i := range cfg.Segments {
		cs := &cfg.Segments[i]
		key := historyKey(cs)
		keys[key] = true
		n, err := s.countWithin(ctx, cs)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err() // shutting down: not a store error
			}
			historyErrors.Inc()
			if first == nil {
				first = fmt.Errorf("cannot count segment %q: %w", cs.Name, err)
			}
			continue
		}
		s.history.add(key, s.now().UnixMilli(), n)
	}
	s.history.keep(keys)
	return first
}

// countWithin reads one count, giving up after an interval so a slow store
// cannot pile up rounds.
func (s *Server) countWithin(ctx context.Context, cs *config.Segment) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, max(s.historyInterval, time.Second))
	defer cancel()
	return s.store.SegmentCount(ctx, segEntity(cs), cs.Name)
}

// historyParam reads ?history=: 0 when absent, else a duration from 1s to an
// hour. It answers 400 and returns ok false for anything else.
func historyParam(ctx *fasthttp.RequestCtx) (d time.Duration, ok bool) {
	raw := ctx.QueryArgs().Peek("history")
	if raw == nil {
		return 0, true
	}
	d, err := time.ParseDuration(string(raw))
	if err != nil || d < time.Second || d > historyKeep {
		httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "history", "want a duration from 1s to 1h such as 1h or 15m, got "+strconv.Quote(string(raw)))
		return 0, false
	}
	return d, true
}

// withHistory is seg with its last d of counts.
func (s *Server) withHistory(seg Segment, cs *config.Segment, d time.Duration) SegmentHistory {
	points, since := s.history.get(historyKey(cs), s.now(), d)
	return SegmentHistory{Segment: seg, History: points, HistorySince: since}
}
