package stream

import (
	"context"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkTaskScaling is the stream's tasks without Kafka:
// PULSE_BENCH_PARTITIONS tasks (default 4), each on a Pebble of its own on
// disk with its transactions going to memory (the tester's memLog), all
// writing one Pebble online store, each fed its partition's share of
// FullPath/uniform's events (PULSE_BENCH_EVENTS, default 400k, over 50k
// users) by processBatch from a goroutine of its own, PULSE_BENCH_BATCH
// records a batch (default 80,000, the fetches FullPath's catch-up gets
// from kfake; the cost per event grows as batches shrink, since a batch
// finishes, writes and logs each entity it touched once: at 1,000, nearer
// a steady rate's fetches, it is 2-3 times as much). Run at several
// GOMAXPROCS it shows whether the task code grows with cores, the broker
// and the fetch path aside (FullPath runs kfake, whose one loop serves
// every request, in the same process):
//
//	go test -c -o stream.test ./stream && cd stream
//	for p in 1 2 4 8 16; do PULSE_BENCH_PARTITIONS=16 GOMAXPROCS=$p ../stream.test -test.run '^$' -test.bench 'TaskScaling$' -test.benchtime 1x; done
//
// A process per width: with -benchtime 1x, -test.cpu measures the first
// width of its list at the process's own GOMAXPROCS, whatever it names.
// cpu-µs/event is the process's CPU (the tasks, Pebble's flushes and
// compactions, GC) per event.
func BenchmarkTaskScaling(b *testing.B) {
	n, parts := benchN(), benchPartitions()
	size := 80_000
	if v, err := strconv.Atoi(os.Getenv("PULSE_BENCH_BATCH")); err == nil && v > 0 {
		size = v
	}
	cfg, err := config.Parse([]byte(testConfig), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	cfg.Kafka.Partitions = parts
	byPart := make([][]*kgo.Record, parts)
	genEvents(n, 50_000, false, func(r *kgo.Record) {
		h := fnv.New32a()
		h.Write(r.Key)
		p := int(h.Sum32() % uint32(parts))
		r.Topic, r.Partition, r.Offset = cfg.Kafka.Topics.Events, int32(p), int64(len(byPart[p]))
		byPart[p] = append(byPart[p], r)
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	clock := newClock(t0)
	for b.Loop() {
		b.StopTimer()
		dir := b.TempDir()
		store, err := featurestore.OpenPebble(filepath.Join(dir, "store"), featurestore.PebbleOptions{Sync: true})
		if err != nil {
			b.Fatal(err)
		}
		p, err := New(cfg, store, Options{Log: log, Now: clock.now})
		if err != nil {
			b.Fatal(err)
		}
		tasks := make([]*task, parts)
		for i := range tasks {
			if tasks[i], err = memLogTask(p, int32(i), filepath.Join(dir, "task"+strconv.Itoa(i)), nil, log); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		cpu0, start := cpuTime(), time.Now()
		var wg sync.WaitGroup
		errs := make([]error, parts)
		for i, t := range tasks {
			wg.Go(func() {
				recs, out := byPart[i], t.out.(*memLog)
				for len(recs) > 0 && errs[i] == nil {
					batch := recs[:min(len(recs), size)]
					recs = recs[len(batch):]
					errs[i] = t.processBatch(context.Background(), batch, batch[len(batch)-1].Offset+1)
					out.committed, out.all = nil, nil
				}
			})
		}
		wg.Wait()
		elapsed, cpu := time.Since(start), cpuTime()-cpu0
		b.StopTimer()
		for i, err := range errs {
			if err != nil {
				b.Fatalf("partition %d: %v", i, err)
			}
		}
		for _, t := range tasks {
			t.db.Close()
		}
		store.Close()
		b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
		b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/event")
		b.StartTimer()
	}
}
