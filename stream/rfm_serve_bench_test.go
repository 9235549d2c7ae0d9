package stream

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/pulse-rt/pulse/event"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkServeDuringRescore: a task holding PULSE_BENCH_ENTITIES buyers
// (default 200k) serves while it re-scores them all after a boundary
// change (the timer loop's rescoreFor, on the tester's in-memory Pebble
// and log). Meanwhile batches of 100 orders arrive every 20 ms (5k
// events/s) and the online store is read in a loop (one Get every
// 200 µs). Reports the event batch latency (processBatch, waiting for the
// task's work included) and the store read latency, p50 and p99, first
// for as long with no re-score running, then while it runs.
//
//	PULSE_BENCH_ENTITIES=200000 go test ./stream -run '^$' -bench ServeDuringRescore -benchtime 1x
func BenchmarkServeDuringRescore(b *testing.B) {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("PULSE_BENCH_ENTITIES")); err == nil && v > 0 {
		n = v
	}
	st := &tester{t: &testing.T{}}
	if err := st.start(rfmBenchConfig); err != nil {
		b.Fatal(err)
	}
	defer st.close()
	st.p.opts.RescoreBudget = rescoreBudget // the tester cuts by count; time chunks as in production
	task, ctx := st.task, context.Background()
	var offset atomic.Int64
	batch := func(users func(i int) string, count int, at func(i int) time.Time, revenue func(i int) float64) error {
		recs := make([]*kgo.Record, 0, count)
		for i := range count {
			off := offset.Add(1) - 1
			ev := order(users(i), "m"+strconv.FormatInt(off, 10), at(i), revenue(i))
			ev.Type = event.Track
			v, _ := ev.Marshal()
			recs = append(recs, &kgo.Record{Topic: st.p.cfg.Kafka.Topics.Events, Key: []byte(ev.UserID), Value: v, Offset: off})
		}
		err := task.processBatch(ctx, recs, recs[len(recs)-1].Offset+1)
		task.work.Lock()
		st.out.committed, st.out.all = nil, nil
		task.work.Unlock()
		return err
	}
	for start := 0; start < n; start += 10_000 {
		err := batch(func(i int) string { return fmt.Sprintf("u%d", start+i) }, min(10_000, n-start),
			func(i int) time.Time {
				k := start + i
				return t0.Add(-time.Duration(k%400) * 24 * time.Hour).Add(-time.Duration(k%86400) * time.Second)
			},
			func(i int) float64 { return float64(10 + (start+i)%500) })
		if err != nil {
			b.Fatal(err)
		}
	}
	switchTo := func(at time.Time) {
		st.clock.set(at)
		task.rfmNextPublish = time.Time{}
		if err := task.publishRFM(ctx, at); err != nil {
			b.Fatal(err)
		}
		task.work.Lock()
		err := task.syncRFM()
		task.work.Unlock()
		if err != nil {
			b.Fatal(err)
		}
	}
	switchTo(t0) // everyone's first group, not measured
	for more := true; more; {
		var err error
		if more, err = task.rescore(ctx); err != nil {
			b.Fatal(err)
		}
	}
	task.work.Lock()
	st.out.committed, st.out.all = nil, nil
	task.work.Unlock()

	// serve sends batches and reads the store until stop is closed.
	serve := func(stop <-chan struct{}) (batches, reads *hdrhistogram.Histogram, err error) {
		batches, reads = hdrhistogram.New(1, 60_000_000, 3), hdrhistogram.New(1, 60_000_000, 3) // µs
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(3, 4))
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := "u" + strconv.Itoa(rng.IntN(n))
				t := time.Now()
				st.store.Get(ctx, entity, id) //nolint:errcheck // a miss is a read too
				reads.RecordValue(time.Since(t).Microseconds())
				time.Sleep(200 * time.Microsecond)
			}
		}()
		rng := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for err == nil {
			select {
			case <-stop:
				wg.Wait()
				return batches, reads, nil
			case <-tick.C:
			}
			now := st.clock.now()
			t := time.Now()
			err = batch(func(int) string { return "u" + strconv.Itoa(rng.IntN(n)) }, 100,
				func(int) time.Time { return now }, func(int) float64 { return 25 })
			batches.RecordValue(time.Since(t).Microseconds())
		}
		wg.Wait()
		return batches, reads, err
	}
	report := func(name string, batches, reads *hdrhistogram.Histogram) {
		b.Logf("%s: %d batches p50 %v p99 %v max %v; %d store reads p50 %v p99 %v max %v", name,
			batches.TotalCount(), us(batches.ValueAtQuantile(50)), us(batches.ValueAtQuantile(99)), us(batches.Max()),
			reads.TotalCount(), us(reads.ValueAtQuantile(50)), us(reads.ValueAtQuantile(99)), us(reads.Max()))
		b.ReportMetric(float64(batches.ValueAtQuantile(99))/1000, name+"-batch-p99-ms")
		b.ReportMetric(float64(reads.ValueAtQuantile(99))/1000, name+"-read-p99-ms")
	}
	for b.Loop() {
		// v2, a month later: the re-score runs as the timer loop runs it.
		v2 := t0.Add(30 * 24 * time.Hour)
		st.clock.set(v2)
		const quiet = 5 * time.Second
		stop := make(chan struct{})
		time.AfterFunc(quiet, func() { close(stop) })
		batches, reads, err := serve(stop)
		if err != nil {
			b.Fatal(err)
		}
		report("idle", batches, reads)

		switchTo(v2)
		stop = make(chan struct{})
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			defer close(stop)
			for more := true; more; {
				var err error
				if more, err = task.rescoreFor(ctx, time.Second); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		batches, reads, err = serve(stop)
		took := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		report("rescore", batches, reads)
		b.Logf("re-scored %d entities in %v while serving", n, took.Round(time.Millisecond))
		b.ReportMetric(took.Seconds(), "rescore-s")
	}
}

func us(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
