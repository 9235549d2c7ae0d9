package stream

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/identity"
	"github.com/twmb/franz-go/pkg/kadm"
)

// TestStaleLocalStateRestoredInFull: a processor's local state older than
// the changelog keeps tombstones is not caught up from the changelog's
// tail but restored from the whole changelog, so a person deleted while
// the partition was elsewhere, whose tombstone compaction has removed
// since, does not come back. A state within that time is caught up from
// the tail, as always (and would bring them back, had the broker removed
// the tombstone so early: the setup shows the hazard the guard prevents).
func TestStaleLocalStateRestoredInFull(t *testing.T) {
	for _, c := range []struct {
		name    string
		advance time.Duration // of the clock, after the deletion
		orders  float64       // the deleted person's orders after one new order
		stale   bool
	}{
		{"within half the tombstones' retention", 20 * time.Minute, 4, false},
		{"past half the tombstones' retention", 31 * time.Minute, 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			orders, stale := staleStateOrders(t, c.advance)
			if orders != c.orders {
				t.Errorf("the deleted person's orders_lifetime after one new order: %v, want %v", orders, c.orders)
			}
			if c.stale && stale < 1 {
				t.Errorf("pulse_stream_stale_states_total grew by %v, want at least 1", stale)
			}
		})
	}
}

// staleStateOrders: a processor counts three orders of pu and stops;
// another, on a data dir of its own, deletes pu; the changelog is compacted
// with delete.retention.ms 0 (the tombstone goes with pu's records), then
// set to an hour; the clock moves on by advance and the first processor's
// state comes back for one more order of pu. It returns pu's orders then,
// and how much pulse_stream_stale_states_total grew.
func staleStateOrders(t *testing.T, advance time.Duration) (float64, float64) {
	e := newEnv(t, nil)
	at := t0.Add(-10 * time.Minute)
	old := t.TempDir()
	p := e.processor(Options{}, old)
	stop := e.run(p)
	for i := range 3 {
		e.produce(eventRecord(t, order("pu", fmt.Sprint("o-pu-", i), at, 50)))
	}
	e.produce(eventRecord(t, order("qu", "o-qu", at, 70)))
	waitFeature(t, e, "pu", "orders_lifetime", 3.0, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	p = e.processor(Options{}, t.TempDir())
	stop = e.run(p)
	e.forgetRequest(identity.User("pu"), "del-1")
	waitVectors(t, e, 30*time.Second, []string{"qu"}, []string{"pu"})
	// Later traffic on every partition: compaction keeps each partition's
	// last batch as it is.
	for i := range 40 {
		e.produce(eventRecord(t, order(fmt.Sprint("later-", i), fmt.Sprint("o-later-", i), at, 5)))
	}
	e.waitCaughtUp(30*time.Second, p)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	state := e.cfg.Kafka.Topics.State
	setDeleteRetention(t, e, state, "0")
	e.emb.Cluster().Compact()
	for _, r := range readTopic(t, e, state) {
		if string(r.Key) == clEntityPrefix+"pu" {
			t.Fatalf("the changelog still holds a record of pu after compaction (value %d bytes): the setup needs none", len(r.Value))
		}
	}
	setDeleteRetention(t, e, state, "3600000")

	e.clock.set(e.clock.now().Add(advance))
	stale0 := counterValue(mStaleStates)
	p = e.processor(Options{}, old)
	stop = e.run(p)
	e.produce(eventRecord(t, order("pu", "o-pu-new", e.clock.now(), 20)))
	e.waitCaughtUp(30*time.Second, p)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if v, ok := e.store.snapshot()["user/pu"]; ok && v.Features["orders_lifetime"] != nil {
			stop()
			orders, _ := v.Features["orders_lifetime"].(float64)
			return orders, counterValue(mStaleStates) - stale0
		}
		if time.Now().After(deadline) {
			t.Fatal("pu's new order never reached the store")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func setDeleteRetention(t *testing.T, e *env, topic, ms string) {
	t.Helper()
	resps, err := kadm.NewClient(e.prod).AlterTopicConfigs(context.Background(),
		[]kadm.AlterConfig{{Op: kadm.SetConfig, Name: "delete.retention.ms", Value: &ms}}, topic)
	if err == nil {
		err = resps[0].Err
	}
	if err != nil {
		t.Fatal(err)
	}
}
