package stream

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// TestRedisDownStreamCatchesUp: the online store is a real redis-server,
// killed (SIGKILL) during a load and started again 3 s later with its
// data. The processor does not stop: its store writes fail, its tasks
// reopen from their state (which holds what it computed meanwhile), and
// once Redis answers it writes the store up to date on its own. Every
// vector in Redis then equals the reference.
func TestRedisDownStreamCatchesUp(t *testing.T) {
	rs := testenv.StartRedis(t)
	e := newEnv(t, testenv.Kafka(t))
	store, err := featurestore.OpenRedis(config.Redis{Addr: rs.Addr(), KeyPrefix: testenv.RedisKeyPrefix(t)}, featurestore.RedisOptions{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := *e.cfg
	p, err := New(&cfg, store, Options{Now: e.clock.now, SessionTimeout: 6 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	stop := e.run(p)
	ref := newReference(t, e.cfg)
	recs := loadInto(ref, 17, 40, 3000)
	third := len(recs) / 3
	e.produce(recs[:third]...)
	e.waitCaughtUp(30*time.Second, p)

	if err := rs.Kill(); err != nil {
		t.Fatal(err)
	}
	for i := third; i < 2*third; i += 100 {
		e.produce(recs[i:min(i+100, 2*third)]...)
	}
	time.Sleep(3 * time.Second)
	if err := p.fatal.Load(); err != nil {
		t.Fatalf("the processor stopped with Redis down: %v", *err)
	}
	if err := rs.Start(); err != nil {
		t.Fatal(err)
	}
	e.produce(recs[2*third:]...)
	e.waitCaughtUp(60*time.Second, p)
	ctx := context.Background()
	now := e.clock.now()
	var bad []string
	testenv.WaitFor(t, 20*time.Second, "Redis up to date with the reference", func() bool {
		bad = bad[:0]
		for id := range ref.st {
			want, wantSegs := ref.vector(id, now)
			v, err := store.Get(ctx, entity, id)
			if err != nil || !reflect.DeepEqual(v.Features, want) || !reflect.DeepEqual(v.Segments, wantSegs) && len(v.Segments)+len(wantSegs) > 0 {
				bad = append(bad, id)
			}
		}
		return len(bad) == 0
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}
