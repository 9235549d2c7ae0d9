package stream

import (
	"context"
	"encoding/json"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
)

// With stream.commit_interval a task keeps its transaction open across
// fetches: each fetch is processed at once (with early store writes its
// vectors are in the store at once), and one Kafka transaction and one
// local commit take them all. A later fetch sees what the earlier ones
// wrote (a duplicate of an earlier fetch's event is dropped, an entity's
// count goes on); the member lists and the segment records wait for the
// commit, each change once and in order; a transaction dropped at close is
// replayed by the reopened task without counting anything twice.
func TestCommitInterval(t *testing.T) {
	for _, mode := range []string{config.StoreWriteCommitted, config.StoreWriteEarly} {
		t.Run(mode, func(t *testing.T) { commitInterval(t, mode) })
	}
}

func commitInterval(t *testing.T, mode string) {
	e, p, commits := intervalEnv(t, mode)
	early := mode == config.StoreWriteEarly
	bg := context.Background()
	at := func(m int) time.Time { return t0.Add(time.Duration(m-30) * time.Minute) }
	// u1's order enters segments in the second fetch, its product view
	// in the third changes none: the store must end with the vector of
	// the third.
	view := &event.Event{Type: event.Track, Event: "Product Viewed", UserID: "u1", MessageID: "v1",
		Timestamp: at(4), Properties: map[string]any{"product_id": "p1"}}
	recs := e.partitionRecords(order("u0", "m1", at(1), 10), order("u0", "m2", at(2), 10), order("u1", "m4", at(3), 10),
		// m1 again: a duplicate of the first fetch's event.
		order("u0", "m3", at(3), 10), view, order("u0", "m1", at(1), 10),
		order("u0", "m5", at(5), 10))
	fetches := [][]*kgo.Record{recs[:1], recs[1:3], recs[3:6]}
	f4 := recs[6:]
	tk, err := p.openTask(bg, 0)
	if err != nil {
		t.Fatal(err)
	}
	playWorker(tk)
	commits.Store(0) // opening committed the features' activation
	before := eventCounters()
	for i, f := range fetches {
		if err := tk.processBatch(bg, f, int64(len(recs))); err != nil {
			t.Fatal(err)
		}
		if tk.open == nil || commits.Load() != 0 {
			t.Fatalf("after fetch %d: transaction open %v, %d commits; want it open, none", i+1, tk.open != nil, commits.Load())
		}
		v, err := e.store.Get(bg, entity, "u0")
		if early != (err == nil) || early && v.Features["orders_lifetime"] != float64(min(i+1, 3)) {
			t.Fatalf("after fetch %d (%s): u0 in the store %v (%v); want it there only with early writes, orders_lifetime %d",
				i+1, mode, v.Features, err, min(i+1, 3))
		}
		if members, _, _ := e.store.SegmentMembers(bg, entity, "odd_orders", "", 10); len(members) > 0 {
			t.Fatalf("after fetch %d: odd_orders members %v before the commit", i+1, members)
		}
	}
	if err := tk.commitOpenUnlock(bg); err != nil {
		t.Fatal(err)
	}
	after := eventCounters()
	if commits.Load() != 1 || tk.open != nil {
		t.Fatalf("%d commits, transaction open %v; want one commit of the three fetches", commits.Load(), tk.open != nil)
	}
	if got := after["applied"] - before["applied"]; got != 5 || after["duplicate"]-before["duplicate"] != 1 {
		t.Errorf("applied %v, duplicate %v; want 5 and 1", got, after["duplicate"]-before["duplicate"])
	}
	last := fetches[2][2].Offset
	if v, err := e.store.Get(bg, entity, "u1"); err != nil || v.Features["products_24h"] != float64(1) {
		t.Errorf("u1: %v (%v), want products_24h 1 (the vector of its last fetch)", v.Features, err)
	}
	if tk.written.Load() != last+1 || tk.next() != last+1 {
		t.Errorf("written %d, next %d; want %d", tk.written.Load(), tk.next(), last+1)
	}
	checkStore(t, e, map[string]float64{"u0": 3, "u1": 1}, map[string][]string{"odd_orders": {"u0", "u1"}, "buyers": {"u0"}})

	// A fourth fetch, then a close before its commit: the reopened task
	// replays it.
	if err := tk.processBatch(bg, f4, int64(len(recs))); err != nil {
		t.Fatal(err)
	}
	tk.dropOpen() // as the worker does at close
	tk.close()
	if commits.Load() != 1 {
		t.Fatalf("%d commits; the close committed the open transaction", commits.Load())
	}
	tk, err = p.openTask(bg, 0)
	if err != nil {
		t.Fatal(err)
	}
	playWorker(tk)
	defer tk.close()
	if tk.next() != last+1 {
		t.Fatalf("reopened at %d, want %d", tk.next(), last+1)
	}
	if err := tk.processBatch(bg, f4, int64(len(recs))); err != nil {
		t.Fatal(err)
	}
	if err := tk.commitOpenUnlock(bg); err != nil {
		t.Fatal(err)
	}
	checkStore(t, e, map[string]float64{"u0": 4, "u1": 1}, map[string][]string{"odd_orders": {"u1"}, "buyers": {"u0"}})

	// Each segment change on the topic once, in order.
	var changes []string
	for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.Segments) {
		var rec segment.Record
		if err := json.Unmarshal(r.Value, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.EntityID == "u0" && rec.Segment == "odd_orders" {
			changes = append(changes, rec.Change)
		}
	}
	if want := []string{"enter", "exit", "enter", "exit"}; !slices.Equal(changes, want) {
		t.Errorf("u0's odd_orders changes on the topic %v, want %v", changes, want)
	}
}

// checkStore checks each entity's orders_lifetime and its vector's
// segments, and the member lists of segments.
func checkStore(t *testing.T, e *env, lifetime map[string]float64, members map[string][]string) {
	t.Helper()
	bg := context.Background()
	for id, n := range lifetime {
		v, err := e.store.Get(bg, entity, id)
		if err != nil || v.Features["orders_lifetime"] != n {
			t.Errorf("%s: %v (%v), want orders_lifetime %v", id, v.Features, err, n)
			continue
		}
		for seg, ids := range members {
			if slices.Contains(v.Segments, seg) != slices.Contains(ids, id) {
				t.Errorf("%s: vector's segments %v, want a member of %s: %v", id, v.Segments, seg, slices.Contains(ids, id))
			}
		}
	}
	for seg, want := range members {
		got, _, err := e.store.SegmentMembers(bg, entity, seg, "", 10)
		slices.Sort(got)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("segment %s: members %v (%v), want %v", seg, got, err, want)
		}
	}
}

// intervalEnv is an env with store_write mode and an hour's commit
// interval (the test commits), and its processor, whose Kafka commits
// are counted.
func intervalEnv(t *testing.T, mode string) (*env, *Processor, *atomic.Int64) {
	e := newEnv(t, nil)
	e.cfg.Stream.StoreWrite = mode
	e.cfg.Stream.CommitInterval = config.Duration(time.Hour)
	commits := new(atomic.Int64)
	p := e.processor(Options{hook: func(at string, _ int32) error {
		if at == "before-txn-commit" {
			commits.Add(1)
		}
		return nil
	}}, "")
	return e, p, commits
}

// playedTask opens p's task of partition 0 with its worker stopped
// (playWorker), closed at the test's end.
func playedTask(t *testing.T, p *Processor) *task {
	tk, err := p.openTask(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	playWorker(tk)
	t.Cleanup(tk.close)
	return tk
}

// playWorker stops tk's worker, so that the test calls processBatch in its
// place: the worker alone touches a transaction kept open. The test then
// calls dropOpen before close, as the worker would.
func playWorker(tk *task) {
	close(tk.quit)
	<-tk.workerDone
	tk.quit = make(chan struct{})
}

// A transaction that carries what another task or the linker waits for (an
// identify's link requests here) commits at once even with an interval: a
// merge would otherwise wait for it at every hop.
func TestCommitIntervalHandsOffAtOnce(t *testing.T) {
	e, p, commits := intervalEnv(t, config.StoreWriteEarly)
	bg := context.Background()
	identify := &event.Event{Type: event.Identify, UserID: "u9", AnonymousID: "a9", MessageID: "i9", Timestamp: t0, ReceivedAt: t0}
	recs := e.partitionRecords(order("u0", "m1", t0, 10), identify)
	tk := playedTask(t, p)
	commits.Store(0)
	if err := tk.processBatch(bg, recs[:1], int64(len(recs))); err != nil {
		t.Fatal(err)
	}
	if tk.open == nil || commits.Load() != 0 {
		t.Fatalf("after an order: transaction open %v, %d commits; want it kept open", tk.open != nil, commits.Load())
	}
	if err := tk.processBatch(bg, recs[1:], int64(len(recs))); err != nil {
		t.Fatal(err)
	}
	if tk.open != nil || commits.Load() != 1 {
		t.Fatalf("after an identify: transaction open %v, %d commits; want the two fetches committed at once", tk.open != nil, commits.Load())
	}
	var requests int
	for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.IdentityRequests) {
		if string(r.Key) == "u9" || string(r.Key) == "a9" {
			requests++
		}
	}
	if requests == 0 {
		t.Error("no link request for the identify on its topic")
	}
}

// The worker commits a transaction it keeps open when nudged (the resolved
// loop does, waiting for the work lock with a merge's records), however
// long its interval.
func TestCommitIntervalNudge(t *testing.T) {
	e, p, commits := intervalEnv(t, config.StoreWriteEarly)
	bg := context.Background()
	recs := e.partitionRecords(order("u0", "m1", t0, 10))
	tk, err := p.openTask(bg, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.close()
	commits.Store(0)
	tk.enqueue(bg, taskWork{recs: recs, hwm: int64(len(recs))})
	testenv.WaitFor(t, 10*time.Second, "u0's early write", func() bool {
		_, err := e.store.Get(bg, entity, "u0")
		return err == nil
	})
	if commits.Load() != 0 {
		t.Fatalf("%d commits before the nudge; want the transaction kept open", commits.Load())
	}
	tk.nudgeWorker()
	testenv.WaitFor(t, 10*time.Second, "the commit after the nudge", func() bool {
		return tk.written.Load() == recs[0].Offset+1
	})
	if commits.Load() != 1 {
		t.Errorf("%d commits, want 1", commits.Load())
	}
}

// Resolved records pending when the worker commits a transaction it kept
// open (nudged by the resolved loop, or its interval up) ride in that
// commit: a merge's step at this task waits for one commit, not for the
// kept one and then one of its own.
func TestCommitIntervalResolvedRideTheKeptCommit(t *testing.T) {
	e, p, commits := intervalEnv(t, config.StoreWriteEarly)
	bg := context.Background()
	recs := e.partitionRecords(order("anon", "m1", t0, 10), order("person", "m2", t0, 10))
	tk := playedTask(t, p)
	commits.Store(0)
	if err := tk.processBatch(bg, recs, int64(len(recs))); err != nil {
		t.Fatal(err)
	}
	if tk.open == nil || commits.Load() != 0 {
		t.Fatalf("after the orders: transaction open %v, %d commits; want it kept open", tk.open != nil, commits.Load())
	}
	move := resolved{Kind: resolvedMove, From: "anon", To: "person", At: t0, Cause: "identify-1"}
	tk.addResolved([]*kgo.Record{{Topic: e.cfg.Kafka.Topics.Resolved, Offset: 0, Key: []byte("anon"), Value: encodeResolved(move)}})
	if err := tk.commitOpenUnlock(bg); err != nil { // the worker's, nudged
		t.Fatal(err)
	}
	if commits.Load() != 1 || tk.meta.resolvedNext != 1 || len(tk.resolvedPend) != 0 {
		t.Fatalf("after the kept commit: %d commits, resolved next %d, %d pending; want 1, 1, 0 (the move in that commit)",
			commits.Load(), tk.meta.resolvedNext, len(tk.resolvedPend))
	}
	if to, err := tk.target(tk.newTxn(), "anon"); err != nil || to != "person" {
		t.Fatalf("anon points to %q (%v), want person", to, err)
	}
	var transfers int
	for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.Resolved) {
		if rr, err := decodeResolved(r.Value); err == nil && rr.Kind == resolvedTransfer && rr.From == "anon" && rr.To == "person" {
			transfers++
		}
	}
	if transfers != 1 {
		t.Errorf("%d transfers of anon's state to person on the resolved topic, want 1", transfers)
	}
	if tk.written.Load() != recs[len(recs)-1].Offset+1 {
		t.Errorf("written %d, want %d: the orders committed", tk.written.Load(), recs[len(recs)-1].Offset+1)
	}
}
