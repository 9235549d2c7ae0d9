package stream

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/rfm"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRescoreResumesFromCursor cuts a re-score after its second chunk (a
// crash before the third chunk's Pebble commit, before or after its
// transaction), reopens the task and lets the re-score finish: it goes
// on from the cursor, so each entity is re-scored once in committed
// chunks, each group change is on the segments topic once, and every
// entity ends in the group its values give.
func TestRescoreResumesFromCursor(t *testing.T) {
	for _, crash := range []string{"rescore-before-commit", "after-txn-commit", "early/before-txn-commit"} {
		t.Run(crash, func(t *testing.T) {
			const n, chunk = 300, 40
			st := startRFMTester(t)
			// With early store writes a re-score chunk still writes the
			// store after its commit (lateStore): a chunk that fails
			// before it leaves the store as it was.
			crash, early := strings.CutPrefix(crash, "early/")
			if early {
				st.p.cfg.Stream.StoreWrite = config.StoreWriteEarly
			}
			ctx := context.Background()
			var recs []*kgo.Record
			add := func(user string, at time.Time, revenue float64) {
				off := int64(len(recs))
				recs = append(recs, st.orderRecord(user, fmt.Sprintf("m%d", off), off, at, revenue))
			}
			for i := range n {
				add(fmt.Sprintf("u%03d", i), t0.Add(-time.Duration(i%200)*24*time.Hour), float64(10+i%500))
			}
			if err := st.task.processBatch(ctx, recs, int64(len(recs))); err != nil {
				t.Fatal(err)
			}
			// v1: everyone's first group, to the end.
			switchTo := func(at time.Time) {
				t.Helper()
				st.clock.set(at)
				st.task.rfmNextPublish = time.Time{}
				if err := st.task.publishRFM(ctx, at); err != nil {
					t.Fatal(err)
				}
				st.task.work.Lock()
				err := st.task.syncRFM()
				st.task.work.Unlock()
				if err != nil {
					t.Fatal(err)
				}
			}
			finish := func() {
				t.Helper()
				for more := true; more; {
					var err error
					if more, err = st.task.rescore(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			switchTo(t0)
			finish()
			if _, ok, _ := st.task.cursor(); ok {
				t.Fatal("a finished re-score left its cursor")
			}
			// A month later a third of the buyers order again, much, so
			// the new boundaries move the others too.
			v2 := t0.Add(30 * 24 * time.Hour)
			st.clock.set(v2)
			from := len(recs)
			for i := 0; i < n; i += 3 {
				for k := range 3 {
					add(fmt.Sprintf("u%03d", i), v2.Add(-time.Duration(k)*time.Hour), 1000)
				}
			}
			if err := st.task.processBatch(ctx, recs[from:], int64(len(recs))); err != nil {
				t.Fatal(err)
			}
			before := len(st.out.all)
			// v2: cut after two chunks.
			st.p.opts.TimerChunk = chunk
			switchTo(v2)
			rescored := counterValue(mRFMRescored)
			for range 2 {
				if more, err := st.task.rescore(ctx); err != nil || !more {
					t.Fatalf("chunk: more=%v err=%v", more, err)
				}
			}
			c, ok, err := st.task.cursor()
			if err != nil || !ok || c.after != fmt.Sprintf("u%03d", 2*chunk-1) {
				t.Fatalf("cursor after two chunks: %+v ok=%v err=%v", c, ok, err)
			}
			st.p.opts.hook = func(at string, _ int32) error {
				if at == crash {
					return errors.New("crash at " + at)
				}
				return nil
			}
			stored := st.store.snapshot()
			if _, err := st.task.rescore(ctx); err == nil {
				t.Fatal("the third chunk did not crash")
			}
			st.p.opts.hook = nil
			if early && !maps.EqualFunc(stored, st.store.snapshot(), func(a, b featurestore.Vector) bool { return reflect.DeepEqual(a, b) }) {
				t.Fatal("a re-score chunk that failed before its commit changed the store")
			}
			var b strings.Builder
			if err := st.reopen(&b); err != nil {
				t.Fatal(err)
			}
			if c2, ok, _ := st.task.cursor(); !ok || c2 != c {
				t.Fatalf("reopened with cursor %+v, want %+v", c2, c)
			}
			finish()
			if got := counterValue(mRFMRescored) - rescored; got != n {
				t.Errorf("entities re-scored in committed chunks: %v, want %d (each once)", got, n)
			}
			// Each group change once.
			seen := map[string]bool{}
			changes := 0
			for _, r := range st.out.all[before:] {
				if r.Topic != st.p.cfg.Kafka.Topics.Segments {
					continue
				}
				rec, err := segment.DecodeRecord(r.Value)
				if err != nil {
					t.Fatal(err)
				}
				k := rec.EntityID + " " + rec.Segment + " " + rec.Change
				if seen[k] {
					t.Errorf("segment change written twice: %s", k)
				}
				seen[k] = true
				changes++
			}
			if changes == 0 {
				t.Fatal("the new boundaries changed no group: the test shows nothing")
			}
			// Every entity in the group its values give.
			now := st.clock.now()
			for i := range n {
				e, err := st.task.load(fmt.Sprintf("u%03d", i))
				if err != nil {
					t.Fatal(err)
				}
				vals := st.p.features.Values(e.st, now, nil)
				s := st.p.rfm
				want := rfm.Assign(st.task.rfmB, s.scores, s.groups, value(vals[s.r]), value(vals[s.f]), value(vals[s.m]))
				rec := e.autoRec // as stored in its value
				if !e.autoLoaded {
					t.Fatalf("%s: no automatic record in its value", e.id)
				}
				if rec.group != want.Group || rec.rfm != [3]uint8{uint8(want.R), uint8(want.F), uint8(want.M)} {
					t.Errorf("%s: group %s rfm=%v, want %+v", e.id, rec.group, rec.rfm, want)
				}
			}
		})
	}
}

// TestRescoreOldQueue: a task that opens on the state of a build from
// before the cursor, with its per-entity re-score queue (q/<id>), deletes
// the queue and re-scores everyone from the start.
func TestRescoreOldQueue(t *testing.T) {
	st := startRFMTester(t)
	st.scoredBuyer(t, "u1")
	// What an older build left: a queue key, no cursor.
	if err := st.task.db.Set(key(pkRescoreOld, "u1"), nil, nil); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := st.reopen(&b); err != nil {
		t.Fatal(err)
	}
	if ok, err := st.task.has(key(pkRescoreOld, "u1")); err != nil || ok {
		t.Fatalf("the old queue key is still there (err %v)", err)
	}
	c, ok, err := st.task.cursor()
	if err != nil || !ok || c != (rescoreCursor{version: st.task.rfmB.Version}) {
		t.Fatalf("cursor %+v ok=%v err=%v, want a re-score of everyone", c, ok, err)
	}
}

// TestRescorePebbleOnly: a re-score that changes no group, automatic
// record or vector (a new version with the same cuts) commits to Pebble
// only: no transaction, and the input offset, changelog position and
// pending entities (meta) stay as the last transaction left them.
func TestRescorePebbleOnly(t *testing.T) {
	const n = 120
	st := startRFMTester(t)
	ctx := context.Background()
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, st.orderRecord(fmt.Sprintf("u%03d", i), fmt.Sprintf("m%d", i), int64(i), t0.Add(-time.Duration(i)*24*time.Hour), float64(10+i)))
	}
	if err := st.task.processBatch(ctx, recs, n); err != nil {
		t.Fatal(err)
	}
	rescoreAll := func() {
		t.Helper()
		if err := st.task.syncRFM(); err != nil {
			t.Fatal(err)
		}
		for more := true; more; {
			var err error
			if more, err = st.task.rescore(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := st.task.publishRFM(ctx, t0); err != nil {
		t.Fatal(err)
	}
	rescoreAll()
	metaBefore := storedMeta(t, st.task)
	st.out.committed = nil
	same := *st.p.rfmLatest.Load()
	same.Version++
	st.p.rfmLatest.Store(&same)
	st.p.opts.TimerChunk = 25 // several chunks
	rescored := counterValue(mRFMRescored)
	rescoreAll()
	if len(st.out.committed) != 0 {
		t.Errorf("%d transactions for a re-score that changed nothing", len(st.out.committed))
	}
	if got := counterValue(mRFMRescored) - rescored; got != n {
		t.Errorf("re-scored %v, want %d", got, n)
	}
	if m := storedMeta(t, st.task); fmt.Sprint(m) != fmt.Sprint(metaBefore) {
		t.Errorf("meta moved: %+v, was %+v", m, metaBefore)
	}
	if _, ok, _ := st.task.cursor(); ok {
		t.Error("cursor left after the walk")
	}
}

func storedMeta(t *testing.T, task *task) meta {
	t.Helper()
	v, closer, err := task.db.Get(pkMeta)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	m, err := decodeMeta(v)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// startRFMTester starts a tester on rfmBenchConfig, closed when the test
// ends.
func startRFMTester(t *testing.T) *tester {
	t.Helper()
	st := &tester{t: t}
	if err := st.start(rfmBenchConfig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.close)
	return st
}

// orderRecord is user's order (a track, as ingest writes it) at offset off
// of the events topic.
func (st *tester) orderRecord(user, msg string, off int64, at time.Time, revenue float64) *kgo.Record {
	ev := order(user, msg, at, revenue)
	ev.Type = event.Track
	v, _ := ev.Marshal()
	return &kgo.Record{Topic: st.p.cfg.Kafka.Topics.Events, Key: []byte(user), Value: v, Offset: off}
}

// scoredBuyer gives the tester one buyer, user, with an order a day
// before t0, then boundaries published at t0, switched to and re-scored
// to the end: the buyer has a group.
func (st *tester) scoredBuyer(t *testing.T, user string) {
	t.Helper()
	ctx := context.Background()
	if err := st.task.processBatch(ctx, []*kgo.Record{st.orderRecord(user, "m1", 0, t0.Add(-24*time.Hour), 10)}, 1); err != nil {
		t.Fatal(err)
	}
	if err := st.task.publishRFM(ctx, t0); err != nil {
		t.Fatal(err)
	}
	if err := st.task.syncRFM(); err != nil {
		t.Fatal(err)
	}
	for more := true; more; {
		var err error
		if more, err = st.task.rescore(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
