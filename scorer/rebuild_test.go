package scorer_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
)

// rebuildEnv is a segments topic holding 90 minutes of changes, a store
// with the counts they leave, and the config of a scorer over both.
type rebuildEnv struct {
	t     *testing.T
	began time.Time // the changes are timed back from it
	logs  syncBuffer
	h     *harness
	segs  map[string]scorer.SegmentHistory // the last answer of wait
}

// newRebuildEnv produces the changes, each keyed by key(entity id), and
// starts a scorer over them with opts.
func newRebuildEnv(t *testing.T, key func(id string) string, opts ...scorer.Option) *rebuildEnv {
	env := newLiveEnv(t)
	// Not env.produce: its delivery timeout counts from a record's
	// timestamp, and these are up to 90 minutes old.
	cl, err := kafka.NewClient(env.cfg.Kafka, kgo.TransactionalID("rebuild-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	e := &rebuildEnv{t: t, began: time.Now()}
	type change struct {
		ago             time.Duration
		entity, segment string
		id, change      string
	}
	produce := func(abort bool, changes ...change) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, c := range changes {
			at := e.began.Add(-c.ago)
			v, _ := json.Marshal(segment.Record{ID: c.id + c.change + c.ago.String(), Segment: c.segment, Entity: c.entity, EntityID: c.id, Change: c.change, At: at.UTC()})
			r := &kgo.Record{Topic: env.cfg.Kafka.Topics.Segments, Key: []byte(key(c.id)), Value: v, Timestamp: at}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		end := kgo.TryCommit
		if abort {
			end = kgo.TryAbort
		}
		if err := cl.EndTransaction(ctx, end); err != nil {
			t.Fatal(err)
		}
	}
	produce(false,
		change{80 * time.Minute, "user", "big_spenders", "u1", "enter"}, // before the hour: in the count at its start
		change{50 * time.Minute, "user", "big_spenders", "u2", "enter"},
		change{40 * time.Minute, "user", "big_spenders", "u3", "enter"},
		change{30 * time.Minute, "user", "big_spenders", "u1", "exit"},
		change{20 * time.Minute, "user", "carts", "u2", "enter"},
		change{10 * time.Minute, "user", "big_spenders", "u4", "enter"},
		// Not the segments of this config.
		change{5 * time.Minute, "account", "big_spenders", "a1", "enter"},
		change{5 * time.Minute, "user", "gone", "u1", "enter"},
	)
	// Aborted: never happened.
	produce(true, change{15 * time.Minute, "user", "big_spenders", "u9", "enter"})

	// The store as the stream left it: u0 was in big_spenders before all this.
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"u0": buyer(), "u2": buyer(), "u3": buyer(), "u4": buyer()},
		map[string][]string{"u0": {"big_spenders"}, "u2": {"big_spenders", "carts"}, "u3": {"big_spenders"}, "u4": {"big_spenders"}})

	cfg := newConfig(t, testConfig)
	cfg.Kafka.Brokers = env.cfg.Kafka.Brokers
	opts = append([]scorer.Option{scorer.WithHistoryRebuild(), scorer.WithLogger(slog.New(slog.NewTextHandler(&e.logs, nil)))}, opts...)
	e.h = start(t, cfg, st, opts...)
	return e
}

// wait polls GET /v1/segments?history=1h until every segment's history
// starts before since, that is until the rebuild is in.
func (e *rebuildEnv) wait(since time.Time) {
	e.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, body := e.h.do("GET", "/v1/segments?history=1h", "read-key", "")
		var got struct{ Segments []scorer.SegmentHistory }
		if err := json.Unmarshal([]byte(body), &got); code != 200 || err != nil {
			e.t.Fatalf("GET /v1/segments?history=1h: %d %s %v", code, body, err)
		}
		e.segs = map[string]scorer.SegmentHistory{}
		rebuilt := true
		for _, s := range got.Segments {
			e.segs[s.Name] = s
			rebuilt = rebuilt && s.HistorySince <= since.UnixMilli()
		}
		if rebuilt {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("history not rebuilt after 30s: %s\nlogs:\n%s", body, e.logs.String())
		}
	}
	for name, s := range e.segs {
		for i := 1; i < len(s.History); i++ {
			if s.History[i][0] <= s.History[i-1][0] {
				e.t.Fatalf("%s: points out of order at %d: %v", name, i, s.History)
			}
		}
	}
}

// since checks every segment's history_since is ago before the rebuild.
func (e *rebuildEnv) since(ago time.Duration) {
	e.t.Helper()
	for name, s := range e.segs {
		if lo, hi := e.began.Add(-ago).UnixMilli(), time.Now().Add(-ago).UnixMilli(); s.HistorySince < lo || s.HistorySince > hi {
			e.t.Errorf("%s: history_since %s, want %s before the rebuild (%s to %s)", name,
				time.UnixMilli(s.HistorySince), ago, time.UnixMilli(lo), time.UnixMilli(hi))
		}
	}
}

// waitLog waits up to 30s for a log line holding every part: the rebuild
// logs after it published the history the test already read.
func (e *rebuildEnv) waitLog(what string, parts ...string) {
	e.t.Helper()
	has := func(line string) bool {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(e.logs.String(), "\n") {
			if has(line) {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("want %s within 30s:\n%s", what, e.logs.String())
		}
	}
}

// count checks the count a chart shows ago before the changes' time: the
// last point at or before it.
func (e *rebuildEnv) count(name string, ago time.Duration, want int64) {
	e.t.Helper()
	got := int64(-1)
	for _, p := range e.segs[name].History {
		if p[0] <= e.began.Add(-ago).UnixMilli() {
			got = p[1]
		}
	}
	if got != want {
		e.t.Errorf("%s %s ago: %d members, want %d\n%v", name, ago, got, want, e.segs[name].History)
	}
}

// TestSegmentHistoryRebuild restarts a scorer over a segments topic that
// has 90 minutes of changes: GET /v1/segments?history=1h has the whole hour
// at once, walked back from the store's counts.
func TestSegmentHistoryRebuild(t *testing.T) {
	e := newRebuildEnv(t, func(id string) string { return id })
	e.wait(e.began.Add(-55 * time.Minute))
	e.since(time.Hour)
	// The rebuilt points read as samples every 10s: a change shows within
	// one interval after it, and not before.
	e.count("big_spenders", 59*time.Minute, 2) // u0, u1
	e.count("big_spenders", 50*time.Minute+time.Millisecond, 2)
	e.count("big_spenders", 50*time.Minute-10*time.Second, 3)
	e.count("big_spenders", 40*time.Minute-10*time.Second, 4)
	e.count("big_spenders", 30*time.Minute-10*time.Second, 3)
	e.count("big_spenders", 15*time.Minute, 3) // the aborted enter is not counted
	e.count("big_spenders", 10*time.Minute+time.Millisecond, 3)
	e.count("big_spenders", 10*time.Minute-10*time.Second, 4)
	e.count("big_spenders", 0, 4)
	e.count("carts", 59*time.Minute, 0)
	e.count("carts", 20*time.Minute+time.Millisecond, 0)
	e.count("carts", 20*time.Minute-10*time.Second, 1)
	e.count("carts", 0, 1)
	e.waitLog("a rebuild log line with the 7 records of the hour", "segment history rebuilt", "records=7")
}

// TestSegmentHistoryRebuildCapped: past its record cap the rebuild keeps
// the newest part of the hour it read whole, and says where it starts.
func TestSegmentHistoryRebuildCapped(t *testing.T) {
	// One partition, so the offsets are known: the hour's six 10-minute
	// slices, newest first, hold 5 offsets (the records 5 minutes ago, the
	// commit marker, the aborted record and its marker), then 1 each.
	// A cap of six takes two slices: 20 minutes back.
	e := newRebuildEnv(t, func(string) string { return "one" }, scorer.WithRebuildLimits(6, time.Minute))
	e.wait(e.began.Add(-15 * time.Minute))
	e.since(20 * time.Minute)
	// The history starts with the count then: carts was entered just before.
	for name, want := range map[string]int64{"big_spenders": 3, "carts": 1} {
		s := e.segs[name]
		if s.History[0] != [2]int64{s.HistorySince, want} {
			t.Errorf("%s: first point %v, want [history_since %d, %d]", name, s.History[0], s.HistorySince, want)
		}
	}
	e.count("big_spenders", 10*time.Minute+time.Millisecond, 3)
	e.count("big_spenders", 10*time.Minute-10*time.Second, 4)
	e.waitLog("a capped rebuild log line", "capped", `"over 6 records"`)
}

// TestSegmentHistoryRebuildOutOfTime: a rebuild that cannot read the
// newest slice in time leaves the history to the sampler.
func TestSegmentHistoryRebuildOutOfTime(t *testing.T) {
	e := newRebuildEnv(t, func(id string) string { return id }, scorer.WithRebuildLimits(1000, time.Nanosecond))
	e.waitLog("a capped rebuild log line", "capped")
	e.wait(time.Now())
	e.since(0)
	e.count("big_spenders", -time.Minute, 4)
}

// syncBuffer is a bytes.Buffer for a logger writing from other goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
