package stream

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// BenchmarkStoreRewrite: how long a stream whose Redis lost writes takes to
// write its entities again (rewriteAll on every task, the four partitions
// in turn, as one task's timer loop would each): entities/s, against the
// same entities' first writes by the stream. Redis from testenv
// (PULSE_TEST_REDIS or a local redis-server); PULSE_BENCH_EVENTS events
// over a quarter as many users.
//
//	bin/testservers -- sh -c 'PULSE_BENCH_EVENTS=400000 go test ./stream -run "^$" -bench StoreRewrite -benchtime 1x'
func BenchmarkStoreRewrite(b *testing.B) {
	n := benchN()
	users := n / 4
	e := newEnv(b, nil)
	benchEvents(b, e, n, users, false)
	store, err := featurestore.OpenRedis(config.Redis{Addr: testenv.Redis(b), KeyPrefix: testenv.RedisKeyPrefix(b)}, featurestore.RedisOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	e.cfg.DataDir = b.TempDir()
	p, err := New(e.cfg, store, Options{Now: e.clock.now})
	if err != nil {
		b.Fatal(err)
	}
	stop := e.run(p)
	defer stop()
	for p.Ready() != nil {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	e.waitCaughtUp(5*time.Minute, p)
	streamRate := float64(n) / time.Since(start).Seconds()
	for b.Loop() {
		p.mu.Lock()
		var tasks []*task
		for _, t := range p.tasks {
			tasks = append(tasks, t)
		}
		p.mu.Unlock()
		entities := testutil.ToFloat64(mStoreRewritten)
		start := time.Now()
		for _, t := range tasks {
			if err := t.rewriteAll(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric((testutil.ToFloat64(mStoreRewritten)-entities)/time.Since(start).Seconds(), "entities/s")
		b.ReportMetric(testutil.ToFloat64(mStoreRewritten)-entities, "entities")
		b.ReportMetric(streamRate, "stream-events/s")
	}
}
