package stream

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/event"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkRescore: a task holding PULSE_BENCH_ENTITIES buyers (default
// 200k) switches to new boundaries and re-scores them all, chunk after
// chunk as the timer loop does (chunks of about 10 ms, rescoreBudget), on
// the tester's in-memory Pebble, the transactions going to memory (no
// Kafka round trips). Reports the re-score's time and entities/s; the events that
// build the state are not measured.
//
//	PULSE_BENCH_ENTITIES=1000000 go test ./stream -run '^$' -bench Rescore -benchtime 1x
func BenchmarkRescore(b *testing.B) {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("PULSE_BENCH_ENTITIES")); err == nil && v > 0 {
		n = v
	}
	st := &tester{t: &testing.T{}}
	cfg := rfmBenchConfig
	if err := st.start(cfg); err != nil {
		b.Fatal(err)
	}
	defer st.close()
	st.p.opts.RescoreBudget = rescoreBudget // the tester cuts by count; time chunks as in production
	// The state: one order per buyer, up to 400 days back, on disk.
	task := st.task
	recs := make([]*kgo.Record, 0, 10000)
	flush := func() {
		if len(recs) == 0 {
			return
		}
		if err := task.processBatch(context.Background(), recs, recs[len(recs)-1].Offset+1); err != nil {
			b.Fatal(err)
		}
		st.out.committed, st.out.all = nil, nil
		recs = recs[:0]
	}
	for i := range n {
		at := t0.Add(-time.Duration(i%400) * 24 * time.Hour).Add(-time.Duration(i%86400) * time.Second)
		ev := order(fmt.Sprintf("u%d", i), fmt.Sprintf("m%d", i), at, float64(10+i%500))
		ev.Type = event.Track
		v, _ := ev.Marshal()
		recs = append(recs, &kgo.Record{Topic: st.p.cfg.Kafka.Topics.Events, Key: []byte(ev.UserID), Value: v, Offset: int64(i)})
		if len(recs) == cap(recs) {
			flush()
		}
	}
	flush()
	for b.Loop() {
		for v := 1; v <= 2; v++ {
			// v1: everyone is scored for the first time; v2: the clock
			// moved a month, new boundaries, everyone re-scored again.
			st.clock.set(t0.Add(time.Duration(v-1) * 30 * 24 * time.Hour))
			task.rfmNextPublish = time.Time{}
			start := time.Now()
			if err := task.publishRFM(context.Background(), st.clock.now()); err != nil {
				b.Fatal(err)
			}
			summary := time.Since(start)
			task.work.Lock()
			err := task.syncRFM()
			task.work.Unlock()
			if err != nil {
				b.Fatal(err)
			}
			queued := time.Since(start)
			for more := true; more; {
				if more, err = task.rescore(context.Background()); err != nil {
					b.Fatal(err)
				}
				st.out.committed, st.out.all = nil, nil
			}
			took := time.Since(start)
			b.Logf("v%d: %d entities: summary %v, queued %v, re-scored in %v (%.0f entities/s)", v, n, summary.Round(time.Millisecond),
				queued.Round(time.Millisecond), took.Round(time.Millisecond), float64(n)/took.Seconds())
			b.ReportMetric(took.Seconds(), fmt.Sprintf("v%d-s", v))
		}
	}
}

const rfmBenchConfig = `
features:
  - name: last_order_at
    agg: last
    event: Order Completed
    field: timestamp
  - name: days_since_last_order
    expr: 'last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1'
  - name: orders
    agg: count
    event: Order Completed
  - name: revenue
    agg: sum
    event: Order Completed
    field: properties.revenue
rfm:
  recency: days_since_last_order
  frequency: orders
  monetary: revenue
`
