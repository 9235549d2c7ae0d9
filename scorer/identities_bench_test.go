package scorer_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/scorer"
)

// BenchmarkIdentitiesStart: a scorer's copy of an identity topic of
// PULSE_BENCH_LINKS identifiers (default 200k; a userId and two
// anonymousIds per person), kfake: "first" on an empty data dir, "again"
// on the data dir of the run before (a restart in place), each until it
// has caught up once; heap-MB is the live heap then.
func BenchmarkIdentitiesStart(b *testing.B) {
	n := testenv.BenchLinks(200_000)
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{Partitions: 4})
	if err != nil {
		b.Fatal(err)
	}
	defer emb.Close()
	var cfg config.Config
	cfg.ApplyDefaults()
	cfg.Kafka.Brokers = emb.Addrs()
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	if err := kafka.EnsureTopics(context.Background(), cl, cfg.Kafka); err != nil {
		b.Fatal(err)
	}
	last := testenv.ProduceIdentityLinks(b, cl, cfg.Kafka.Topics.Identity, n, time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC))
	start := func(b *testing.B, dir string) {
		c := cfg
		c.DataDir = dir
		ids := scorer.NewIdentities(&c, nil)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		began := time.Now()
		go func() { done <- ids.Run(ctx) }()
		for {
			if _, ok := ids.CanonicalOf(last); ok && scorer.IdentitiesReady(ids) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		took := time.Since(began)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(took.Milliseconds()), "start-ms")
		b.ReportMetric(float64(after.HeapAlloc-min(before.HeapAlloc, after.HeapAlloc))/(1<<20), "heap-MB")
		b.ReportMetric(float64(scorer.LinksRead(ids)), "links-read")
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.Run("first", func(b *testing.B) {
		for b.Loop() {
			start(b, b.TempDir())
		}
	})
	b.Run("again", func(b *testing.B) {
		dir := b.TempDir()
		start(b, dir)
		for b.Loop() {
			start(b, dir)
		}
	})
}
