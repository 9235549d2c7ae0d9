package stream

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/proccpu"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// benchEvents produces n events for users to the env's events topic:
// users drawn uniformly, or Zipf-distributed (s=1.1) when zipf.
func benchEvents(b *testing.B, e *env, n, users int, zipf bool) {
	recs := make([]*kgo.Record, 0, 10000)
	genEvents(n, users, zipf, func(r *kgo.Record) {
		recs = append(recs, r)
		if len(recs) == cap(recs) {
			e.produce(recs...)
			recs = recs[:0]
		}
	})
	e.produce(recs...)
}

// genEvents makes the benchmarks' n events over users (uniform, or Zipf):
// a quarter orders, the rest product views, in the last day before t0;
// each a record keyed by its user.
func genEvents(n, users int, zipf bool, emit func(*kgo.Record)) {
	rng := rand.New(rand.NewPCG(9, 9))
	z := rand.NewZipf(rng, 1.1, 1, uint64(users-1))
	for i := range n {
		u := rng.IntN(users)
		if zipf {
			u = int(z.Uint64())
		}
		user := fmt.Sprintf("user-%d", u)
		at := t0.Add(-time.Duration(rng.Int64N(int64(24 * time.Hour))))
		var ev *event.Event
		if i%4 == 0 {
			ev = order(user, fmt.Sprintf("b%d", i), at, float64(rng.IntN(200)))
		} else {
			ev = &event.Event{Type: event.Track, Event: "Product Viewed", UserID: user, MessageID: fmt.Sprintf("b%d", i),
				Timestamp: at, ReceivedAt: at, Properties: map[string]any{"product_id": fmt.Sprintf("p%d", rng.IntN(100))}}
		}
		v, _ := ev.Marshal()
		emit(&kgo.Record{Key: []byte(user), Value: v})
	}
}

// BenchmarkFullPath: kfake -> stream (Pebble, changelog transactions) ->
// Pebble online store, against a raw franz-go consume of the same topic
// in the same run.
//
//	go test ./stream -run '^$' -bench 'FullPath$' -benchtime 1x
func BenchmarkFullPath(b *testing.B) {
	b.Run("uniform-50k-users", func(b *testing.B) { benchFullPath(b, 50_000, false) })
	b.Run("zipf-1M-users", func(b *testing.B) { benchFullPath(b, 1_000_000, true) })
}

// benchPartitions is the events topic's partition count in the tests and
// benchmarks: 4, or PULSE_BENCH_PARTITIONS (to see the stream scale with
// partitions and cores on a larger machine).
func benchPartitions() int {
	if v, err := strconv.Atoi(os.Getenv("PULSE_BENCH_PARTITIONS")); err == nil && v > 0 {
		return v
	}
	return 4
}

// benchBrokers are the brokers the FullPath and Floor benchmarks run on:
// PULSE_BENCH_BROKERS (host:port,...), or nil for an in-process kfake.
// Their cpu-µs/event is this process's CPU, so with kfake it includes the
// broker's work (storing the changelog, serving the fetches), which a real
// deployment spends on other machines; on a real broker it is Pulse's own,
// and the broker's, when it runs on this machine, is reported beside it:
//
//	bin/testservers -- sh -c 'PULSE_BENCH_BROKERS=$PULSE_TEST_KAFKA go test ./stream -run "^$" -bench "FullPath$/uniform" -benchtime 1x'
func benchBrokers() []string {
	if v := os.Getenv("PULSE_BENCH_BROKERS"); v != "" {
		return strings.Split(v, ",")
	}
	return nil
}

// brokerCPU reads the CPU time of the process listening on the first of
// brokers' ports when it runs on this machine, or returns nil: the broker
// of a PULSE_BENCH_BROKERS run, to report its CPU per event too.
func brokerCPU(b *testing.B, brokers []string) func() time.Duration {
	if len(brokers) == 0 {
		return nil
	}
	read, self, err := proccpu.LocalServer(brokers[0])
	if err != nil {
		b.Logf("the broker's CPU is not reported: %v", err)
		return nil
	}
	if read == nil || self {
		return nil // elsewhere, or kfake in this process: its CPU is in cpu-µs/event
	}
	return func() time.Duration {
		d, err := read()
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
}

// reportCPU reports this process's CPU per event since cpu0 and, when
// broker is not nil, the broker's since broker0.
func reportCPU(b *testing.B, n int, cpu0 time.Duration, broker func() time.Duration, broker0 time.Duration) {
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(n), "cpu-µs/event")
	if broker != nil {
		b.ReportMetric(float64((broker()-broker0).Microseconds())/float64(n), "broker-cpu-µs/event")
	}
}

// startCPU is broker's CPU time now, or 0 when it is nil.
func startCPU(broker func() time.Duration) time.Duration {
	if broker == nil {
		return 0
	}
	return broker()
}

// benchN is how many events the stream benchmarks produce.
func benchN() int {
	if v, err := strconv.Atoi(os.Getenv("PULSE_BENCH_EVENTS")); err == nil && v > 0 {
		return v // a longer run: more batches, so less of one batch's luck
	}
	return 400_000
}

// benchConsumer reads the env's events topic from its start, as the
// baseline does.
func benchConsumer(b *testing.B, e *env, opts ...kgo.Opt) *kgo.Client {
	cl, err := kafka.NewClient(e.cfg.Kafka, append([]kgo.Opt{kgo.ConsumeTopics(e.cfg.Kafka.Topics.Events),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(64 << 20)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	return cl
}

// rawConsume is the baseline: n records of the events topic polled and
// dropped by a bare franz-go consumer, in records/s.
func rawConsume(b *testing.B, e *env, n int) float64 {
	start := time.Now()
	cl := benchConsumer(b, e)
	defer cl.Close()
	for got := 0; got < n; {
		got += cl.PollRecords(context.Background(), 10000).NumRecords()
	}
	return float64(n) / time.Since(start).Seconds()
}

func benchFullPath(b *testing.B, users int, zipf bool) {
	n := benchN()
	e := newEnv(b, benchBrokers())
	broker := brokerCPU(b, e.brokers)
	benchEvents(b, e, n, users, zipf)
	for b.Loop() {
		raw := rawConsume(b, e, n)

		// The stream, into a real Pebble online store.
		store, err := featurestore.OpenPebble(filepath.Join(b.TempDir(), "store"), featurestore.PebbleOptions{Sync: true})
		if err != nil {
			b.Fatal(err)
		}
		cfg := *e.cfg
		cfg.Stream.Group += fmt.Sprint(time.Now().UnixNano())
		cfg.DataDir = b.TempDir()
		p, err := New(&cfg, store, Options{Now: e.clock.now})
		if err != nil {
			b.Fatal(err)
		}
		// Measured from the moment the group is joined and the partitions
		// are assigned (the join takes a few seconds on kfake).
		stop := e.run(p)
		for p.Ready() != nil {
			time.Sleep(time.Millisecond)
		}
		start := time.Now()
		cpu0, broker0 := cpuTime(), startCPU(broker)
		e.waitCaughtUp(5*time.Minute, p)
		full := float64(n) / time.Since(start).Seconds()
		// The whole process's CPU (stream, Pebble store, and kfake unless
		// the run is on a real broker): a figure that the other load on a
		// shared machine does not move.
		reportCPU(b, n, cpu0, broker, broker0)
		stop()
		store.Close()
		reportHistograms(b)
		b.ReportMetric(full, "events/s")
		b.ReportMetric(raw, "raw-consume-events/s")
		b.ReportMetric(100*full/raw, "%-of-raw")
	}
}

// BenchmarkFloor bounds what the full path can reach against the raw
// consume: per event, only the part of the stream's work that no design
// of it can skip — fetch, decode with the stream's own projection, Apply
// with its feature set into states held in a map, and, per entity changed
// in a poll, its encoded state produced to the changelog topic and
// flushed before the next poll (a changelog is what lets a partition move)
// — with none of the rest: no Pebble, no dedupe, no transaction, no
// vectors, no online store, no segments. Same events as FullPath/uniform,
// raw consume of the same topic in the same run.
//
//	go test ./stream -run '^$' -bench Floor -benchtime 1x
//
// Floor/apply leaves the changelog out too: fetch, decode and Apply alone.
func BenchmarkFloor(b *testing.B) {
	b.Run("apply", func(b *testing.B) { benchFloor(b, false) })
	b.Run("apply+changelog", func(b *testing.B) { benchFloor(b, true) })
}

func benchFloor(b *testing.B, changelog bool) {
	n := benchN()
	e := newEnv(b, benchBrokers())
	broker := brokerCPU(b, e.brokers)
	benchEvents(b, e, n, 50_000, false)
	p := e.processor(Options{}, "") // its decoder and feature set; never run
	for b.Loop() {
		raw := rawConsume(b, e, n)

		start := time.Now()
		cpu0, broker0 := cpuTime(), startCPU(broker)
		cl := benchConsumer(b, e, kafka.ProducerOpts()...)
		ctx := context.Background()
		states := map[string]*aggregate.State{}
		touched := map[string]*aggregate.State{}
		var ev event.Event
		var buf []byte
		for got := 0; got < n; {
			fs := cl.PollRecords(ctx, 10000)
			fs.EachRecord(func(r *kgo.Record) {
				if err := p.records.Unmarshal(r.Value, &ev); err != nil {
					b.Fatal(err)
				}
				st := states[string(r.Key)]
				if st == nil {
					st = p.features.NewState()
					states[string(r.Key)] = st
				}
				changed, err := p.features.Apply(st, &ev)
				if err != nil {
					b.Fatal(err)
				}
				if changed {
					touched[string(r.Key)] = st
				}
			})
			got += fs.NumRecords()
			if !changelog {
				clear(touched)
				continue
			}
			// The poll's states encoded into one buffer (a buffer that
			// grows leaves the earlier values in the old one).
			buf = buf[:0]
			for id, st := range touched {
				mark := len(buf)
				buf = st.AppendBinary(buf)
				cl.Produce(ctx, &kgo.Record{Topic: e.cfg.Kafka.Topics.State, Key: []byte(id), Value: buf[mark:len(buf):len(buf)]}, nil)
			}
			clear(touched)
			if err := cl.Flush(ctx); err != nil {
				b.Fatal(err)
			}
		}
		floor := float64(n) / time.Since(start).Seconds()
		reportCPU(b, n, cpu0, broker, broker0)
		cl.Close()
		b.ReportMetric(floor, "events/s")
		b.ReportMetric(raw, "raw-consume-events/s")
		b.ReportMetric(100*floor/raw, "%-of-raw")
		b.ReportMetric(float64(len(states)), "entities")
	}
}

// BenchmarkFreshness: events produced at a steady rate with receivedAt =
// the produce time; the latency is the store write's end minus the
// receivedAt of the newest event folded into each vector. Timer interval
// and rate as in the issue: 10k events/s.
//
//	go test ./stream -run '^$' -bench Freshness -benchtime 1x
func BenchmarkFreshness(b *testing.B) {
	const rate, seconds = 10_000, 5
	e := newEnv(b, nil)
	hist := hdrhistogram.New(1, 10_000_000, 3) // µs
	var mu sync.Mutex
	e.store.onWrite = func(batch []featurestore.Update) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		for _, u := range batch {
			if !u.Vector.EventAt.IsZero() {
				hist.RecordValue(now.Sub(u.Vector.EventAt).Microseconds())
			}
		}
	}
	for b.Loop() {
		p := e.processor(Options{}, "")
		stop := e.run(p)
		for p.Ready() != nil {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		rng := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(time.Millisecond)
		start := time.Now()
		sent := 0
		for time.Since(start) < seconds*time.Second {
			<-tick.C
			due := int(time.Since(start).Seconds()*rate) - sent
			for range due {
				user := fmt.Sprintf("user-%d", rng.IntN(100_000))
				now := time.Now().UTC()
				ev := order(user, fmt.Sprintf("f%d", sent), now, 1)
				v, _ := ev.Marshal()
				e.prod.Produce(context.Background(), &kgo.Record{Topic: e.cfg.Kafka.Topics.Events, Key: []byte(user), Value: v}, nil)
				sent++
			}
		}
		tick.Stop()
		e.prod.Flush(context.Background())
		e.waitCaughtUp(time.Minute, p)
		stop()
	}
	mu.Lock()
	defer mu.Unlock()
	b.ReportMetric(float64(hist.ValueAtQuantile(50))/1000, "p50-ms")
	b.ReportMetric(float64(hist.ValueAtQuantile(99))/1000, "p99-ms")
	b.ReportMetric(float64(hist.ValueAtQuantile(99.9))/1000, "p99.9-ms")
	b.ReportMetric(float64(hist.TotalCount()), "vectors")
}

// BenchmarkRestore: a task gaining a partition whose changelog holds one
// million entities.
//
//	go test ./stream -run '^$' -bench Restore -benchtime 1x
func BenchmarkRestore(b *testing.B) {
	const n = 1_000_000
	e := newEnv(b, nil)
	p := e.processor(Options{}, "")
	st := p.features.NewState()
	for i := range 3 {
		p.features.Apply(st, order("x", fmt.Sprint(i), t0.Add(-time.Duration(i)*time.Hour), 10))
	}
	val := entityValue(nil, st.AppendBinary(nil), p.segments.AppendMembership(nil, nil))
	cl, err := kafka.NewClient(e.cfg.Kafka, append(kafka.ProducerOpts(), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, 0, 20000)
	for i := range n {
		recs = append(recs, &kgo.Record{Topic: e.cfg.Kafka.Topics.State, Partition: 0,
			Key: []byte(clEntityPrefix + fmt.Sprintf("user-%d", i)), Value: val})
		if len(recs) == cap(recs) || i == n-1 {
			if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	b.ResetTimer()
	for b.Loop() {
		p.cfg.DataDir = b.TempDir()
		start := time.Now()
		t, err := p.openTask(context.Background(), 0)
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.ReportMetric(took.Seconds(), "restore-s")
		b.ReportMetric(n/took.Seconds(), "entities/s")
		it, _ := t.db.NewIter(&pebble.IterOptions{LowerBound: pkEntity, UpperBound: prefixEnd(pkEntity)})
		got := 0
		for it.First(); it.Valid(); it.Next() {
			got++
		}
		it.Close()
		t.close()
		if got != n {
			b.Fatalf("restored %d entities, want %d", got, n)
		}
	}
}

// reportHistograms logs the batch and transaction timings of the run.
func reportHistograms(b *testing.B) {
	mfs, _ := prometheus.DefaultGatherer.Gather()
	for _, mf := range mfs {
		switch mf.GetName() {
		case "pulse_stream_txn_seconds", "pulse_stream_batch_seconds", "pulse_stream_batch_records":
			h := mf.GetMetric()[0].GetHistogram()
			b.Logf("%s: count %d sum %.3f", mf.GetName(), h.GetSampleCount(), h.GetSampleSum())
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
