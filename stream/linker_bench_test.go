package stream

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkLinkerOpen: the linker's start over an identity topic of
// PULSE_BENCH_LINKS identifiers (default 200k; people of one userId and
// two anonymousIds), on kfake: "first" on an empty data dir, "again" on
// the data dir of the open before (a restart). heap-MB is the live heap
// the open leaves.
func BenchmarkLinkerOpen(b *testing.B) {
	n := testenv.BenchLinks(200_000)
	e := newEnv(b, nil)
	testenv.ProduceIdentityLinks(b, e.prod, e.cfg.Kafka.Topics.Identity, n, t0)
	open := func(b *testing.B, dir string) {
		p := e.processor(Options{}, dir)
		l := &linker{p: p, log: p.log, opts: identity.FromConfig(p.cfg.Identity)}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		if err := l.open(context.Background()); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-min(before.HeapAlloc, after.HeapAlloc))/(1<<20), "heap-MB")
		b.ReportMetric(float64(took.Milliseconds()), "open-ms")
		runtime.KeepAlive(l.graph)
		l.closeClients()
		l.closeState()
	}
	b.Run("first", func(b *testing.B) {
		for b.Loop() {
			open(b, b.TempDir())
		}
	})
	b.Run("again", func(b *testing.B) {
		dir := b.TempDir()
		open(b, dir)
		for b.Loop() {
			open(b, dir)
		}
	})
}

// BenchmarkLinkerFold: the linker folding PULSE_BENCH_LINK_REQUESTS link
// requests (default 100k; identifies of two devices per user, a third of
// them a second device of a known user), in folds of 5,000 as its loop
// polls them, each fold one Kafka transaction (kfake) and, since the
// graph went to Pebble, one batch of its state.
func BenchmarkLinkerFold(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("PULSE_BENCH_LINK_REQUESTS")); err == nil && v > 0 {
		n = v
	}
	recs := make([]*kgo.Record, n)
	for i := range recs {
		q := identity.Request{From: identity.Anonymous(fmt.Sprint("a", i)), To: identity.User(fmt.Sprint("u", i/2)),
			Kind: identity.KindIdentify, At: t0, MessageID: fmt.Sprint("m", i)}
		v, err := identity.EncodeRequest(q)
		if err != nil {
			b.Fatal(err)
		}
		recs[i] = &kgo.Record{Key: []byte(q.To.Value), Value: v, Offset: int64(i)}
	}
	for b.Loop() {
		e := newEnv(b, nil)
		p := e.processor(Options{}, b.TempDir())
		l := &linker{p: p, log: p.log, opts: identity.FromConfig(p.cfg.Identity)}
		if err := l.open(context.Background()); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for i := 0; i < n; i += 5000 {
			if err := l.fold(context.Background(), recs[i:min(i+5000, n)]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "requests/s")
		l.closeClients()
		l.closeState()
	}
}
