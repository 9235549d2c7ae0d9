package stream

import (
	"context"
	"fmt"
	"slices"
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

	forgetElsewhereAndCompact(t, e, "pu", []string{"qu"}, []string{"pu"}, e.cfg.Kafka.Topics.State, clEntityPrefix+"pu")

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

// forgetElsewhereAndCompact: another processor, on a data dir of its own,
// deletes user on request (present and absent: the vectors to wait for);
// later traffic (40 users, each a device identified and an order) puts
// batches after the deletion on every partition of every topic, as
// compaction keeps each partition's last batch as it is; then topic is
// compacted with delete.retention.ms 0, checked to hold no record of the
// keys gone (the setup needs none), and given an hour.
func forgetElsewhereAndCompact(t *testing.T, e *env, user string, present, absent []string, topic string, gone ...string) {
	t.Helper()
	at := t0.Add(-10 * time.Minute)
	p := e.processor(Options{}, t.TempDir())
	stop := e.run(p)
	e.forgetRequest(identity.User(user), "del-1")
	waitVectors(t, e, 30*time.Second, present, absent)
	for i := range 40 {
		dev, later := fmt.Sprint("later-dev-", i), fmt.Sprint("later-", i)
		e.produce(eventRecord(t, identifyEvent(dev, later, "i-"+dev, at)), eventRecord(t, order(later, "o-"+later, at, 1)))
	}
	e.waitCaughtUp(30*time.Second, p)
	waitFeature(t, e, "later-39", "orders_lifetime", 1.0, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	setDeleteRetention(t, e, topic, "0")
	e.emb.Cluster().Compact()
	for _, r := range readTopic(t, e, topic) {
		if slices.Contains(gone, string(r.Key)) {
			t.Fatalf("%s still holds a record of %s after compaction (value %d bytes): the setup needs none", topic, r.Key, len(r.Value))
		}
	}
	setDeleteRetention(t, e, topic, "3600000")
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
