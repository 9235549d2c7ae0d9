package stream

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A Redis that loses a write the stream cannot see lost (here its mark
// survived; in life, a loss while the partition moved to a process that
// restored its state from the changelog) leaves a member list wrong for
// good: the stream tells the store membership changes relative to its own
// state. Here u1's first order (entering hot and odd_orders) is lost; its
// second keeps it in hot, so the stream tells the store no change for hot,
// and hot's list misses u1 while u1's vector names hot. RepairMembers
// (pulse store repair) puts the list right from the vectors, with the
// stream running.
func TestRedisLostWriteRepairedFromVectors(t *testing.T) {
	e, store, rdb, prefix := newRedisEnv(t)
	p, err := New(e.cfg, store, Options{Now: e.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	stop := e.run(p)
	defer stop()
	ctx := context.Background()
	e.clock.set(t0.Add(time.Minute))
	e.produce(eventRecord(t, order("u1", "m1", t0, 10)))
	e.waitCaughtUp(30*time.Second, p)
	members := func(seg string) []string {
		t.Helper()
		ids, _, err := store.SegmentMembers(ctx, entity, seg, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if !slices.Equal(members("hot"), []string{"u1"}) || !slices.Equal(members("odd_orders"), []string{"u1"}) {
		t.Fatalf("after the first order: hot %q, odd_orders %q", members("hot"), members("odd_orders"))
	}
	// Redis loses that write: as if it never came.
	for _, cmd := range [][]any{
		{"DEL", prefix + "v:" + entity + ":u1"},
		{"ZREM", prefix + "s:" + entity + ":hot", "u1"},
		{"ZREM", prefix + "s:" + entity + ":odd_orders", "u1"},
	} {
		if err := rdb.Do(ctx, cmd...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	e.produce(eventRecord(t, order("u1", "m2", t0, 10)))
	e.waitCaughtUp(30*time.Second, p)
	var v featurestore.Vector
	testenv.WaitFor(t, 10*time.Second, "u1's second vector in Redis", func() bool {
		v, err = store.Get(ctx, entity, "u1")
		return err == nil && v.Features["orders_lifetime"] == 2.0
	})
	if !slices.Equal(v.Segments, []string{"hot"}) || len(members("hot")) != 0 {
		t.Fatalf("the drift this test is about did not happen: u1's vector names %q, hot holds %q", v.Segments, members("hot"))
	}

	rep, err := store.RepairMembers(ctx, entity, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Added != 1 || rep.Removed != 0 {
		t.Errorf("repair: %+v, want u1 added to hot", rep)
	}
	if !slices.Equal(members("hot"), []string{"u1"}) || len(members("odd_orders")) != 0 {
		t.Errorf("after the repair: hot %q, odd_orders %q; want u1 in hot only", members("hot"), members("odd_orders"))
	}
}

// A Redis that loses its last writes, its marks with them (a failover to a
// replica that had not received them): the stream's next write to the
// partition finds its mark behind the one it set, and the task writes the
// entities of its writes since that mark again (the whole partition after
// a restart, when it no longer knows them), with their whole membership. u1's
// lists are right again, and u2, whose lost order no event follows, has its
// vector back at once instead of at its next event. In both store_write
// modes, and when the loss comes while the stream is stopped: the
// restarted task knows its last mark from its state, and its first write
// (the last transaction's entities again) finds the loss.
func TestRedisLostWritesRewritten(t *testing.T) {
	for _, mode := range []string{config.StoreWriteCommitted, config.StoreWriteEarly} {
		for _, restart := range []bool{false, true} {
			name := mode + "/live"
			if restart {
				name = mode + "/across-a-restart"
			}
			t.Run(name, func(t *testing.T) { redisLostWritesRewritten(t, mode, restart) })
		}
	}
}

func redisLostWritesRewritten(t *testing.T, mode string, restart bool) {
	e, store, rdb, prefix := newRedisEnv(t)
	e.cfg.Stream.StoreWrite = mode
	e.cfg.DataDir = t.TempDir()
	ctx := context.Background()
	start := func() (*Processor, func() error) {
		p, err := New(e.cfg, store, Options{Now: e.clock.now})
		if err != nil {
			t.Fatal(err)
		}
		return p, e.run(p)
	}
	p, stop := start()
	defer func() { stop() }()
	// Every event on partition 0: one task, one mark.
	cl, err := kafka.NewClient(e.cfg.Kafka, append(kafka.ProducerOpts(), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	produce := func(evs ...*event.Event) {
		t.Helper()
		for _, ev := range evs {
			r := eventRecord(t, ev)
			r.Topic, r.Partition = e.cfg.Kafka.Topics.Events, 0
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		e.waitCaughtUp(30*time.Second, p)
	}
	members := func(seg string) []string {
		ids, _, _ := store.SegmentMembers(ctx, entity, seg, "", 10)
		return ids
	}
	e.clock.set(t0.Add(time.Minute))
	// Ten users whose writes the loss does not reach (product views: in
	// no segment).
	var early []*event.Event
	for i := range 10 {
		early = append(early, &event.Event{Type: event.Track, Event: "Product Viewed", UserID: fmt.Sprintf("x%d", i),
			MessageID: fmt.Sprintf("n%d", i), Timestamp: t0, ReceivedAt: t0, Properties: map[string]any{"product_id": "p1"}})
	}
	produce(early...)
	produce(order("u0", "m0", t0, 10))
	markKey := prefix + "mark:stream:" + e.cfg.Kafka.Topics.Events + ":0"
	var before string
	testenv.WaitFor(t, 10*time.Second, "u0 in Redis, its member lists and the partition's mark", func() bool {
		before, err = rdb.Get(ctx, markKey).Result()
		return err == nil && slices.Equal(members("odd_orders"), []string{"u0"})
	})
	// u1's and u2's orders, then Redis loses them and the mark they set.
	produce(order("u1", "m1", t0, 10), order("u2", "m2", t0, 10))
	testenv.WaitFor(t, 10*time.Second, "u1 and u2 in Redis", func() bool {
		return slices.Equal(members("odd_orders"), []string{"u0", "u1", "u2"})
	})
	if restart {
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
	for _, cmd := range [][]any{
		{"DEL", prefix + "v:" + entity + ":u1", prefix + "v:" + entity + ":u2"},
		{"ZREM", prefix + "s:" + entity + ":hot", "u1", "u2"},
		{"ZREM", prefix + "s:" + entity + ":odd_orders", "u1", "u2"},
		{"SET", markKey, before},
	} {
		if err := rdb.Do(ctx, cmd...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	lost, rewritten := testutil.ToFloat64(mStoreLost), testutil.ToFloat64(mStoreRewritten)
	if restart {
		p, stop = start()
		e.waitCaughtUp(30*time.Second, p)
	} else {
		produce(order("u1", "m3", t0, 10)) // u1 stays in hot and leaves odd_orders
	}
	// Live, the task knows its writes since the store's mark (u0's, which
	// set it, then u1's and u2's) and writes those again; restarted, it
	// does not, and writes the whole partition (the x's too).
	want, which := 3.0, "u0, u1, u2"
	if restart {
		want, which = 13, "the x's, u0, u1, u2"
	}
	orders := 1.0
	odd := []string{"u0", "u1", "u2"}
	if !restart {
		orders, odd = 2, []string{"u0", "u2"}
	}
	testenv.WaitFor(t, 10*time.Second, "the partition written again", func() bool {
		v1, err1 := store.Get(ctx, entity, "u1")
		v2, err2 := store.Get(ctx, entity, "u2")
		// The rewrite done, not only the restart's rewrite of the last
		// transaction's entities (u1, u2), which comes first.
		return err1 == nil && err2 == nil && v1.Features["orders_lifetime"] == orders && v2.Features["orders_lifetime"] == 1.0 &&
			slices.Equal(members("hot"), []string{"u0", "u1", "u2"}) && slices.Equal(members("odd_orders"), odd) &&
			testutil.ToFloat64(mStoreRewritten)-rewritten >= want
	})
	if got := testutil.ToFloat64(mStoreLost) - lost; got != 1 {
		t.Errorf("pulse_stream_store_lost_writes_total rose by %v, want 1", got)
	}
	if got := testutil.ToFloat64(mStoreRewritten) - rewritten; got != want {
		t.Errorf("pulse_stream_store_rewritten_entities_total rose by %v, want %v (%s)", got, want, which)
	}
}

// The rewrite to do is kept in the task's state: a task that opens with it
// there (a crash came between the loss being found and the rewrite's end)
// writes every entity again.
func TestStoreRewriteResumesAfterRestart(t *testing.T) {
	e, store, rdb, prefix := newRedisEnv(t)
	e.cfg.DataDir = t.TempDir()
	ctx := context.Background()
	p, err := New(e.cfg, store, Options{Now: e.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	stop := e.run(p)
	var recs []*kgo.Record
	for i := range 20 { // on every partition
		recs = append(recs, eventRecord(t, order(fmt.Sprintf("u%d", i), fmt.Sprintf("m%d", i), t0, 10)))
	}
	e.produce(recs...)
	e.waitCaughtUp(30*time.Second, p)
	// Later transactions of other users: the u's are not the last
	// transaction's entities, which a restart writes again anyway.
	recs = recs[:0]
	for i := range 40 {
		recs = append(recs, eventRecord(t, order(fmt.Sprintf("w%d", i), fmt.Sprintf("n%d", i), t0, 10)))
	}
	e.produce(recs...)
	e.waitCaughtUp(30*time.Second, p)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Partition 0's rewrite was found and not done; its u's vectors are
	// gone.
	db, err := pebble.Open(p.taskDir(0), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	it, _ := db.NewIter(&pebble.IterOptions{LowerBound: pkEntity, UpperBound: prefixEnd(pkEntity)})
	for it.First(); it.Valid(); it.Next() {
		if id := string(it.Key()[len(pkEntity):]); strings.HasPrefix(id, "u") {
			ids = append(ids, id)
		}
	}
	it.Close()
	if err := db.Set(pkStoreRewrite, nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if len(ids) == 0 {
		t.Fatal("partition 0 holds no u")
	}
	for _, id := range ids {
		if err := rdb.Del(ctx, prefix+"v:"+entity+":"+id).Err(); err != nil {
			t.Fatal(err)
		}
	}
	p, err = New(e.cfg, store, Options{Now: e.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	stop = e.run(p)
	defer stop()
	testenv.WaitFor(t, 10*time.Second, "partition 0's vectors written again", func() bool {
		_, found, err := store.GetMany(ctx, entity, ids)
		return err == nil && !slices.Contains(found, false)
	})
}

// newRedisEnv is a test's env (kfake) with a Redis online store on
// testenv's redis-server under a key prefix of the test's own, and a plain
// client of that server to change what the store holds behind its back.
func newRedisEnv(t *testing.T) (e *env, store *featurestore.Redis, rdb *redis.Client, prefix string) {
	addr := testenv.Redis(t)
	prefix = testenv.RedisKeyPrefix(t)
	e = newEnv(t, nil)
	store, err := featurestore.OpenRedis(config.Redis{Addr: addr, KeyPrefix: prefix}, featurestore.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	rdb = redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	return e, store, rdb, prefix
}
