package stream

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkIdentity: the full path (kfake -> stream -> Pebble online
// store) over the same events with identity resolution on and off, in
// the same run: half the events anonymous (keyed by the anonymousId, on
// other partitions than their user), 10% of the anonymous ids later
// identified (an identify keyed by the user). events/s is the input
// caught up; with identity on, the merges (linker, moves, transfers,
// forwarded events) run beside it and are included in the CPU figure as
// far as they went by then.
//
//	go test ./stream -run '^$' -bench Identity -benchtime 1x
func BenchmarkIdentity(b *testing.B) {
	n := benchN()
	e := newEnv(b, nil)
	identified := identityBenchEvents(b, e, n, 50_000)
	for b.Loop() {
		// off, on, on, off: what warms up or slows down during the run
		// weighs on both alike.
		var off, on float64
		for _, identity := range []bool{false, true, true, false} {
			r := benchIdentityRun(b, e, n, identity)
			if identity {
				on += r / 2
			} else {
				off += r / 2
			}
		}
		b.ReportMetric(off, "off-events/s")
		b.ReportMetric(on, "on-events/s")
		b.ReportMetric(on/off, "on/off")
		b.ReportMetric(float64(identified), "identified-anonymous-ids")
	}
}

// identityBenchEvents produces n events for users: half as the user,
// half from the user's anonymous device; the identify of 10% of the
// devices comes after the first half of the stream. It returns how many
// devices identify.
func identityBenchEvents(b *testing.B, e *env, n, users int) int {
	rng := rand.New(rand.NewPCG(9, 9))
	recs := make([]*kgo.Record, 0, 10000)
	add := func(ev *event.Event) {
		v, _ := ev.Marshal()
		recs = append(recs, &kgo.Record{Key: []byte(ev.EntityID()), Value: v})
		if len(recs) == cap(recs) {
			e.produce(recs...)
			recs = recs[:0]
		}
	}
	identified := 0
	for i := range n {
		u := rng.IntN(users)
		user, anon := fmt.Sprintf("user-%d", u), fmt.Sprintf("anon-%d", u)
		if i == n/2 {
			for d := 0; d < users; d += 10 {
				at := t0.Add(-time.Hour)
				add(&event.Event{Type: event.Identify, UserID: fmt.Sprintf("user-%d", d), AnonymousID: fmt.Sprintf("anon-%d", d),
					MessageID: fmt.Sprintf("i%d", d), Timestamp: at, ReceivedAt: at})
				identified++
			}
		}
		at := t0.Add(-time.Duration(rng.Int64N(int64(24 * time.Hour))))
		var ev *event.Event
		if i%4 == 0 {
			ev = order(user, fmt.Sprintf("b%d", i), at, float64(rng.IntN(200)))
		} else {
			ev = &event.Event{Type: event.Track, Event: "Product Viewed", UserID: user, MessageID: fmt.Sprintf("b%d", i),
				Timestamp: at, ReceivedAt: at, Properties: map[string]any{"product_id": fmt.Sprintf("p%d", rng.IntN(100))}}
		}
		if i%2 == 1 {
			ev.UserID, ev.AnonymousID = "", anon
		}
		add(ev)
	}
	e.produce(recs...)
	return identified
}

// benchIdentityRun runs a fresh processor over the events topic and
// returns the input events/s.
func benchIdentityRun(b *testing.B, e *env, n int, on bool) float64 {
	store, err := featurestore.OpenPebble(filepath.Join(b.TempDir(), "store"), featurestore.PebbleOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	cfg := *e.cfg
	cfg.Stream.Group += fmt.Sprint(time.Now().UnixNano())
	cfg.DataDir = b.TempDir()
	cfg.Identity.Enabled = &on
	// Each run its own identity topics: the linker starts from nothing.
	suffix := fmt.Sprint(".", time.Now().UnixNano())
	cfg.Kafka.Topics.Identity += suffix
	cfg.Kafka.Topics.IdentityRequests += suffix
	cfg.Kafka.Topics.Resolved += suffix
	cfg.Kafka.Topics.State += suffix
	p, err := New(&cfg, store, Options{Now: e.clock.now})
	if err != nil {
		b.Fatal(err)
	}
	stop := e.run(p)
	for p.Ready() != nil {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	cpu0 := cpuTime()
	merges0 := counterValue(mMerges)
	e.waitCaughtUp(5*time.Minute, p)
	rate := float64(n) / time.Since(start).Seconds()
	if on {
		b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(n), "on-cpu-µs/event")
		b.ReportMetric(counterValue(mMerges)-merges0, "merges-by-catch-up")
	} else {
		b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(n), "off-cpu-µs/event")
	}
	stop()
	return rate
}

// BenchmarkMergeLatency: how long after an identify is acked by Kafka (the
// moment ingest answers 200) the merged profile is readable: one at a
// time, a device and its user each have an order in the store, the
// identify is produced, and the user's vector is polled (every 0.2 ms)
// until it counts both orders. kfake, 4 partitions, memory store.
//
//	go test ./stream -run '^$' -bench MergeLatency -benchtime 1x
func BenchmarkMergeLatency(b *testing.B) {
	e := newEnv(b, nil)
	p := e.processor(Options{}, "")
	e.run(p)
	for p.Ready() != nil {
		time.Sleep(time.Millisecond)
	}
	ctx := context.Background()
	waitFor := func(id string, want float64) time.Time {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if v, err := e.store.Get(ctx, entity, id); err == nil && v.Features["orders_lifetime"] == want {
				return time.Now()
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s never reached %v orders", id, want)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	n := 200
	if v, err := strconv.Atoi(os.Getenv("PULSE_BENCH_MERGES")); err == nil && v > 0 {
		n = v
	}
	for b.Loop() {
		h := hdrhistogram.New(1, 60_000_000, 3) // µs
		for i := range n {
			anon, user := fmt.Sprintf("ml-anon-%d-%d", b.N, i), fmt.Sprintf("ml-user-%d-%d", b.N, i)
			a := order("", fmt.Sprintf("ml-a-%d", i), t0, 1)
			a.AnonymousID = anon
			e.produce(eventRecord(b, a), eventRecord(b, order(user, fmt.Sprintf("ml-u-%d", i), t0, 1)))
			waitFor(anon, 1)
			waitFor(user, 1)
			idf := &event.Event{Type: event.Identify, UserID: user, AnonymousID: anon, MessageID: fmt.Sprintf("ml-i-%d", i), Timestamp: t0, ReceivedAt: t0}
			e.produce(eventRecord(b, idf))
			acked := time.Now()
			h.RecordValue(waitFor(user, 2).Sub(acked).Microseconds())
		}
		b.ReportMetric(float64(h.ValueAtQuantile(50))/1000, "p50-ms")
		b.ReportMetric(float64(h.ValueAtQuantile(99))/1000, "p99-ms")
		b.ReportMetric(float64(h.Max())/1000, "max-ms")
	}
}
