package stream

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pulse-rt/pulse/config"
)

// With stream.store_write: early a transaction's vectors are in the store
// before its Kafka commit; with the default, only after it. The member
// lists' changes wait for the commit in both modes: a transaction that
// fails after its early write shows in the store until the reopened task's
// replay writes the same entities again, and the replay, at a later
// processing time, need not make the failed write's segment changes again
// (here the order left orders_1h meanwhile, so u0 is not "hot" any more):
// a change told early would stay in the member list for good.
func TestEarlyStoreWrite(t *testing.T) {
	for _, mode := range []string{config.StoreWriteCommitted, config.StoreWriteEarly} {
		t.Run(mode, func(t *testing.T) { earlyStoreWrite(t, mode) })
	}
}

func earlyStoreWrite(t *testing.T, mode string) {
	e := newEnv(t, nil)
	e.cfg.Stream.StoreWrite = mode
	bg := context.Background()
	var fail atomic.Bool
	var atCommit struct {
		found bool
		hot   []string
	}
	p := e.processor(Options{hook: func(at string, _ int32) error {
		if at != "before-txn-commit" || !fail.CompareAndSwap(true, false) {
			return nil
		}
		_, err := e.store.Get(bg, entity, "u0")
		atCommit.found = err == nil
		atCommit.hot, _, _ = e.store.SegmentMembers(bg, entity, "hot", "", 10)
		return errors.New("injected at before-txn-commit")
	}}, "")
	got := e.partitionRecords(order("u0", "m0", t0.Add(-30*time.Minute), 10))

	failBatch(t, p, got, &fail).close()
	early := mode == config.StoreWriteEarly
	if atCommit.found != early || len(atCommit.hot) > 0 {
		t.Fatalf("before the Kafka commit the store had u0: %v, hot members %v; want u0's vector there only with early writes, no member yet",
			atCommit.found, atCommit.hot)
	}

	// The replay, 31 minutes later: the order is out of orders_1h.
	e.clock.set(t0.Add(31 * time.Minute))
	tk, err := p.openTask(bg, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.close()
	stateCommits := func() uint64 {
		return samples(mStateCommit.WithLabelValues("false").(prometheus.Histogram)) + samples(mStateCommit.WithLabelValues("true").(prometheus.Histogram))
	}
	stores, states := samples(mStoreWrite), stateCommits()
	if err := tk.processBatch(bg, got, int64(len(got))); err != nil {
		t.Fatal(err)
	}
	// The replay's commit is timed: its store write(s), its local state.
	if samples(mStoreWrite) == stores || stateCommits() == states {
		t.Error("the commit did not observe pulse_stream_store_write_seconds and pulse_stream_state_commit_seconds")
	}
	v, err := e.store.Get(bg, entity, "u0")
	if err != nil || v.Features["orders_1h"] != float64(0) || v.Features["orders_lifetime"] != float64(1) {
		t.Fatalf("u0 after the replay: %v (%v), want orders_1h 0, orders_lifetime 1", v.Features, err)
	}
	for seg, want := range map[string]bool{"hot": false, "odd_orders": true} {
		members, _, err := e.store.SegmentMembers(bg, entity, seg, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(members, "u0") != want || slices.Contains(v.Segments, seg) != want {
			t.Errorf("segment %s after the replay: members %v, u0's vector %v; want u0 a member: %v", seg, members, v.Segments, want)
		}
	}
}
