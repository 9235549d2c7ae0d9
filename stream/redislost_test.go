package stream

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// A Redis that loses a write (a failover to a replica that had not
// received it) leaves a member list wrong for good: the stream tells the
// store membership changes relative to its own state. Here u1's first
// order (entering hot and odd_orders) is lost; its second keeps it in hot,
// so the stream tells the store no change for hot, and hot's list misses
// u1 while u1's vector names hot. RepairMembers (pulse store repair) puts
// the list right from the vectors, with the stream running.
func TestRedisLostWriteRepairedFromVectors(t *testing.T) {
	addr := testenv.Redis(t)
	prefix := testenv.RedisKeyPrefix(t)
	e := newEnv(t, nil)
	store, err := featurestore.OpenRedis(config.Redis{Addr: addr, KeyPrefix: prefix}, featurestore.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
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
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
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
