package stream

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestFeaturesAfterBatch(t *testing.T) {
	e := newEnv(t, nil)
	ref := newReference(t, e.cfg)
	recs := loadInto(ref, 1, 20, 2000)
	e.produce(recs...)
	p := e.processor(Options{}, "")
	e.run(p)
	e.waitCaughtUp(20*time.Second, p)
	ref.check(t, e.store, e.clock.now())
}

func TestDedupeAndDeadLetters(t *testing.T) {
	e := newEnv(t, nil)
	p := e.processor(Options{}, "")
	stop := e.run(p)
	e.produce(eventRecord(t, order("a", "m1", t0, 10)))
	e.waitCaughtUp(10*time.Second, p)
	// The same messageId in a later batch, and in the same batch.
	e.produce(eventRecord(t, order("a", "m1", t0, 10)), eventRecord(t, order("a", "m2", t0, 5)), eventRecord(t, order("a", "m2", t0, 5)))
	// Too late: more than allowed_lateness (2d) behind the user's newest.
	e.produce(eventRecord(t, order("a", "m3", t0.Add(-72*time.Hour), 100)))
	// Not an event; and one without a messageId (gets topic/partition/offset).
	e.produce(&kgo.Record{Key: []byte("a"), Value: []byte(`{"type":"nope","userId":"a"}`)})
	e.produce(eventRecord(t, order("a", "", t0, 1)), eventRecord(t, order("a", "", t0, 1)))
	e.waitCaughtUp(10*time.Second, p)
	stop()
	v, err := e.store.Get(context.Background(), entity, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Features["orders_lifetime"]; got != 4.0 {
		t.Errorf("orders_lifetime = %v, want 4 (m1, m2 once each, two records without messageId)", got)
	}
	if got := v.Features["revenue_24h"]; got != 17.0 {
		t.Errorf("revenue_24h = %v, want 17", got)
	}
	reasons := map[string]int{}
	for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.Invalid) {
		dl, err := event.DecodeDeadLetter(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		reasons[dl.Reason]++
		if dl.Reason == "late" && !strings.Contains(dl.Error, "too late") {
			t.Errorf("late dead letter says %q", dl.Error)
		}
		if dl.Reason == "invalid" && dl.Field != "type" {
			t.Errorf("invalid dead letter field %q, want type", dl.Field)
		}
	}
	if reasons["late"] != 1 || reasons["invalid"] != 1 {
		t.Errorf("dead letters by reason = %v, want 1 late and 1 invalid", reasons)
	}
}

// With identity resolution off, an identify maps the anonymous id to the
// user within its partition only (what Pulse did before identity.enabled).
func TestIdentityAliasWhenResolutionOff(t *testing.T) {
	e := newEnv(t, nil)
	off := false
	e.cfg.Identity.Enabled = &off
	p := e.processor(Options{}, "")
	e.run(p)
	anon := func(id, msg string) *event.Event {
		ev := order("", msg, t0, 1)
		ev.AnonymousID = id
		return ev
	}
	idf := &event.Event{Type: event.Identify, UserID: "user1", AnonymousID: "anon1", MessageID: "i1", Timestamp: t0, ReceivedAt: t0,
		Traits: map[string]any{"country": "DE"}}
	// Same key so the events share a partition, as ingest keys them.
	rec := func(ev *event.Event) *kgo.Record { r := eventRecord(t, ev); r.Key = []byte("anon1"); return r }
	e.produce(rec(anon("anon1", "x1")), rec(idf), rec(anon("anon1", "x2")))
	e.waitCaughtUp(10*time.Second, p)
	v, err := e.store.Get(context.Background(), entity, "user1")
	if err != nil {
		t.Fatal(err)
	}
	if v.Features["orders_lifetime"] != 1.0 || v.Features["country"] != "DE" {
		t.Errorf("user1 = %v, want the order after identify and country DE", v.Features)
	}
	if v, _ := e.store.Get(context.Background(), entity, "anon1"); v.Features["orders_lifetime"] != 1.0 {
		t.Errorf("anon1 = %v, want the order before identify", v.Features)
	}
}

// A window slides with no new event: the timer recomputes the vector and
// emits the time-driven segment changes.
func TestTimersSlideWindowsAndSegments(t *testing.T) {
	e := newEnv(t, nil)
	p := e.processor(Options{}, "")
	stop := e.run(p)
	e.produce(eventRecord(t, order("a", "o1", t0.Add(-time.Hour-time.Minute), 10)), eventRecord(t, order("a", "o2", t0.Add(-10*time.Minute), 10)))
	e.waitCaughtUp(10*time.Second, p)
	waitVector(t, e, "a", func(f map[string]any, segs []string) bool {
		return f["orders_1h"] == 1.0 && f["orders_30d"] == 2.0 && equal(segs, "hot")
	})
	// 50 minutes on, o2 leaves the 1h window: exit hot.
	e.clock.set(t0.Add(51 * time.Minute))
	waitVector(t, e, "a", func(f map[string]any, segs []string) bool { return f["orders_1h"] == 0.0 && len(segs) == 0 })
	// 30 days on, both orders leave orders_30d: enter lapsing, no event.
	e.clock.set(t0.Add(30*24*time.Hour + time.Minute))
	waitVector(t, e, "a", func(f map[string]any, segs []string) bool { return f["orders_30d"] == 0.0 && equal(segs, "lapsing") })
	stop()
	var got []string
	for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.Segments) {
		var rec segment.Record
		json.Unmarshal(r.Value, &rec)
		got = append(got, rec.Change+" "+rec.Segment)
	}
	want := "enter hot,exit hot,enter lapsing"
	if strings.Join(got, ",") != want {
		t.Errorf("segment changes = %v, want %s", got, want)
	}
}

// A batch fires the timers due before it applies its events, in its own
// transaction (processTxn): with the timer loop asleep, the timer's exit
// is still on the topic, before the event's enter, each at its own time.
func TestBatchFiresDueTimersFirst(t *testing.T) {
	e := newEnv(t, nil)
	e.cfg.Stream.TimerInterval = config.Duration(time.Minute) // the loop never ticks in this test
	p := e.processor(Options{}, "")
	stop := e.run(p)
	e.produce(eventRecord(t, order("a", "o1", t0.Add(-10*time.Minute), 10)))
	e.waitCaughtUp(10*time.Second, p)
	waitVector(t, e, "a", func(f map[string]any, segs []string) bool { return slices.Contains(segs, "hot") })
	// o1 leaves the 1h window at t0+50m; an order at t0+51m brings a
	// back. Without the timer, orders_1h would go 1 -> 1: no change.
	e.clock.set(t0.Add(51 * time.Minute))
	e.produce(eventRecord(t, order("a", "o2", t0.Add(51*time.Minute), 10)))
	e.waitCaughtUp(10*time.Second, p)
	stop()
	var got []string
	for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.Segments) {
		rec, err := segment.DecodeRecord(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Segment == "hot" {
			got = append(got, rec.Change+" "+rec.Segment+" "+rec.At.Sub(t0).String())
		}
	}
	want := "enter hot -10m0s,exit hot 50m0s,enter hot 51m0s"
	if strings.Join(got, ",") != want {
		t.Errorf("segment changes = %v, want %s", got, want)
	}
}

func equal(got []string, want ...string) bool {
	return strings.Join(got, ",") == strings.Join(want, ",")
}

func waitVector(t *testing.T, e *env, id string, ok func(map[string]any, []string) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var v any
	for time.Now().Before(deadline) {
		vec, err := e.store.Get(context.Background(), entity, id)
		if err == nil && ok(vec.Features, vec.Segments) {
			return
		}
		v = vec
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("vector of %s never matched; last %+v", id, v)
}

// A stopped processor resumes from its Pebble offset: nothing counted twice.
func TestRestartResumes(t *testing.T) {
	e := newEnv(t, nil)
	ref := newReference(t, e.cfg)
	recs := loadInto(ref, 2, 30, 3000)
	e.produce(recs[:1500]...)
	p := e.processor(Options{}, "")
	stop := e.run(p)
	e.waitCaughtUp(20*time.Second, p)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.produce(recs[1500:]...)
	p = e.processor(Options{}, "")
	stop = e.run(p)
	e.waitCaughtUp(20*time.Second, p)
	stop()
	ref.check(t, e.store, e.clock.now())
	ref.checkMembers(t, e.store, e.cfg.Segments, e.clock.now())
	final := segmentChanges(t, e)
	if len(final) == 0 {
		t.Fatal("no segment changes on the topic")
	}
	for id := range ref.st {
		_, want := ref.vector(id, e.clock.now())
		if !equal(final[id], want...) {
			t.Errorf("user %s: segments from the topic %v, want %v", id, final[id], want)
		}
	}
}

// Crashes at random points of the commit path, in process: a task fails
// and is reopened, or the whole processor dies and a new one starts.
// Final features equal the reference and every segment change is on the
// topic exactly once.
// With stream.commit_interval the same, a transaction kept open across
// fetches.
func TestCrashAtRandomPoints(t *testing.T) {
	for _, mode := range []string{config.StoreWriteCommitted, config.StoreWriteEarly} {
		t.Run(mode, func(t *testing.T) { crashAtRandomPoints(t, mode, 0) })
		t.Run(mode+"/commit_interval", func(t *testing.T) { crashAtRandomPoints(t, mode, 150*time.Millisecond) })
	}
}

func crashAtRandomPoints(t *testing.T, storeWrite string, interval time.Duration) {
	e := newEnv(t, nil)
	e.cfg.Stream.StoreWrite = storeWrite
	e.cfg.Stream.CommitInterval = config.Duration(interval)
	ref := newReference(t, e.cfg)
	recs := loadInto(ref, 3, 40, 6000)
	rng := rand.New(rand.NewPCG(3, 3))     // the test's choices
	hookRng := rand.New(rand.NewPCG(4, 4)) // the hook's, under mu
	var mu sync.Mutex
	crashes := map[string]int{}
	hook := func(point string, _ int32) error {
		mu.Lock()
		defer mu.Unlock()
		switch r := hookRng.IntN(40); {
		case r == 0:
			crashes[point+" (task)"]++
			return errors.New("injected crash at " + point)
		case r == 1:
			crashes[point+" (process)"]++
			return errKill
		}
		return nil
	}
	txns, fetches := histogram(mTxnFetches)
	p := e.processor(Options{hook: hook, MaxPollRecords: 200}, "")
	stop := e.run(p)
	for i := 0; i < len(recs); i += 500 {
		chunk := recs[i:min(i+500, len(recs))]
		if interval > 0 {
			// A trickle: fetches that come while a transaction is open.
			for j := 0; j < len(chunk); j += 100 {
				e.produce(chunk[j:min(j+100, len(chunk))]...)
				time.Sleep(10 * time.Millisecond)
			}
		} else {
			e.produce(chunk...)
		}
		e.tryCatchUp(time.Second, p)
		// Sometimes restart the processor (it may also have died).
		if rng.IntN(3) == 0 {
			stop()
			p = e.processor(Options{hook: hook, MaxPollRecords: 200}, "")
			stop = e.run(p)
		}
	}
	// Finish without crashes.
	stop()
	p = e.processor(Options{MaxPollRecords: 200}, "")
	stop = e.run(p)
	e.waitCaughtUp(30*time.Second, p)
	stop()
	t.Logf("injected crashes: %v", crashes)
	if len(crashes) == 0 {
		t.Fatal("no crash injected")
	}
	n, f := histogram(mTxnFetches)
	t.Logf("%d input transactions took %.0f fetches", n-txns, f-fetches)
	if interval > 0 && f-fetches <= float64(n-txns) {
		t.Error("no transaction was kept open for a second fetch")
	}
	ref.check(t, e.store, e.clock.now())
	final := segmentChanges(t, e)
	if len(final) == 0 {
		t.Fatal("no segment changes on the topic")
	}
	for id := range ref.st {
		_, want := ref.vector(id, e.clock.now())
		if !equal(final[id], want...) {
			t.Errorf("user %s: segments from the topic %v, want %v", id, final[id], want)
		}
	}
}

// Two processors share the group on a real Kafka broker; one dies mid-load
// (its clients close with a transaction possibly open and its Pebble batch
// not committed). The survivor takes its partitions, restores them from the
// changelog, and ends with the features of one processor that saw
// everything, each segment change written once.
func TestRebalanceKillOneRealKafka(t *testing.T) {
	e := newEnv(t, testenv.Kafka(t))
	ref := newReference(t, e.cfg)
	recs := loadInto(ref, 5, 60, 8000)
	var commits atomic.Int64
	killAt := int64(12)
	hook := func(point string, _ int32) error {
		if point == "after-txn-commit" && commits.Add(1) >= killAt {
			return errKill // dies between the transaction and its Pebble batch
		}
		return nil
	}
	a := e.processor(Options{hook: hook, MaxPollRecords: 250}, filepath.Join(t.TempDir(), "a"))
	b := e.processor(Options{MaxPollRecords: 250}, filepath.Join(t.TempDir(), "b"))
	// a stops by itself once killed (the kill cancels its Run); a stop
	// from here could come before its workers reported the kill.
	deadA := runUntilDead(t, a)
	e.run(b)
	// Wait until both own partitions, so the kill moves some.
	deadline := time.Now().Add(60 * time.Second)
	for len(a.Partitions()) == 0 || len(b.Partitions()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("partitions not shared: a %v, b %v", a.Partitions(), b.Partitions())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("a owns %v, b owns %v", a.Partitions(), b.Partitions())
	for i := 0; i < len(recs); i += 400 {
		e.produce(recs[i:min(i+400, len(recs))]...)
		time.Sleep(20 * time.Millisecond)
	}
	// a dies by itself at its killAt-th commit; stopping it before then
	// (a busy machine is slow to get there) would be a clean stop.
	deadline = time.Now().Add(120 * time.Second)
	for commits.Load() < killAt && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := waitDead(deadA, 60*time.Second); !errors.Is(err, errKill) {
		t.Fatalf("processor a ended with %v after %d commits, want the injected kill", err, commits.Load())
	}
	e.waitCaughtUp(90*time.Second, b)
	if got := b.Partitions(); len(got) != 4 {
		t.Fatalf("survivor owns %v, want all 4 partitions", got)
	}
	ref.waitMatches(t, e.store, e.clock.now(), 10*time.Second)
	final := segmentChanges(t, e)
	for id := range ref.st {
		_, want := ref.vector(id, e.clock.now())
		if !equal(final[id], want...) {
			t.Errorf("user %s: segments from the topic %v, want %v", id, final[id], want)
		}
	}
}

// The kfake log of `pulse dev` is wiped, or the topics deleted and made
// again under their names, while the stream's state is kept: the task
// notices its offset is beyond the new log's end, or, where the new log is
// already past the old offsets, that the topic's id is another; it drops
// the partition's state and resynchronises from the start. Every new
// event counts, none is skipped as if read before, and the old state is
// gone.
func TestLogWipedResynchronises(t *testing.T) {
	for _, c := range []struct {
		name     string
		old, new int // events in the old log and in the new one
	}{
		{"offsets past the new end", 2000, 300},
		{"the new log past the old offsets", 200, 600},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, nil)
			recs, _ := load(11, 10, c.old)
			e.produce(recs...)
			dataDir := t.TempDir()
			p := e.processor(Options{}, dataDir)
			stop := e.run(p)
			e.waitCaughtUp(20*time.Second, p)
			if err := stop(); err != nil {
				t.Fatal(err)
			}

			e2 := e.anew()
			ref := newReference(t, e2.cfg)
			e2.produce(loadInto(ref, 12, 10, c.new)...)
			p = e2.processor(Options{}, dataDir)
			e2.run(p)
			e2.waitCaughtUp(20*time.Second, p)
			ref.check(t, e2.store, e2.clock.now())
		})
	}
}

// Changing a segment rule re-evaluates stored members with no new event.
func TestSegmentRuleChangeReevaluates(t *testing.T) {
	e := newEnv(t, nil)
	e.produce(eventRecord(t, order("a", "o1", t0, 10)))
	dataDir := t.TempDir()
	p := e.processor(Options{}, dataDir)
	stop := e.run(p)
	e.waitCaughtUp(10*time.Second, p)
	stop()
	waitVector(t, e, "a", func(_ map[string]any, segs []string) bool { return equal(segs, "hot", "odd_orders") })
	for i := range e.cfg.Segments {
		if e.cfg.Segments[i].Name == "buyers" {
			e.cfg.Segments[i].Rule = "orders_lifetime >= 1"
		}
	}
	p = e.processor(Options{}, dataDir)
	e.run(p)
	waitVector(t, e, "a", func(_ map[string]any, segs []string) bool { return equal(segs, "buyers", "hot", "odd_orders") })
}
