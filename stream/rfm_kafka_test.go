package stream

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/rfm"
)

const rfmTestConfig = `
stream:
  allowed_lateness: 400d
  timer_interval: 20ms
features:
  - name: last_order_at
    agg: last
    event: Order Completed
    field: timestamp
  - name: days_since_last_order
    expr: 'last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1'
  - name: orders_365d
    agg: count
    event: Order Completed
    window: 365d
  - name: revenue_365d
    agg: sum
    event: Order Completed
    field: properties.revenue
    window: 365d
models:
  - name: churn
    path: %s
    features: [orders_365d, revenue_365d]
traits:
  - name: churn_risk
    model: churn
rfm:
  recency: days_since_last_order
  frequency: orders_365d
  monetary: revenue_365d
  refresh: 1s
segments:
  - name: high_value_churn
    rule: 'churn_risk > 0.7 && revenue_365d > 200'
`

// rfmEnv is newEnv with rfmTestConfig and its own RFM topic.
func rfmEnv(t *testing.T) *env {
	e := newEnv(t, testenv.Kafka(t))
	model, err := filepath.Abs("testdata/models/churn.json")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(fmt.Sprintf(rfmTestConfig, model)), "rfm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kafka, cfg.DataDir, cfg.Stream.Group = e.cfg.Kafka, e.cfg.DataDir, e.cfg.Stream.Group
	cfg.Kafka.Topics.RFM = testenv.Topic(t, "s") + ".rfm"
	if err := kafka.EnsureTopics(context.Background(), e.prod, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	e.cfg = cfg
	return e
}

// TestRFMAcrossPartitions, on a real Kafka with four partitions: the
// boundaries are merged from every partition's summary (all 60 buyers, not
// partition 0's alone), published on the RFM topic, and every task scores
// with that one version; each buyer's group is the one the pure package
// gives its values under numpy-exact cuts; the trait makes a live segment;
// a restart scores with the stored version and writes no change twice.
func TestRFMAcrossPartitions(t *testing.T) {
	e := rfmEnv(t)
	p := e.processor(Options{}, "")
	stop := e.run(p)
	const users = 60
	type buyer struct{ r, f, m float64 }
	want := map[string]buyer{}
	n := 0
	for u := range users {
		id := fmt.Sprintf("u%02d", u)
		orders := 1 + u%5
		var last time.Time
		for k := range orders {
			last = t0.Add(-time.Duration(u*3+k*17) * 24 * time.Hour)
			e.produce(eventRecord(t, order(id, fmt.Sprintf("o%d", n), last, float64(10+u*7+k))))
			n++
		}
		newest := t0.Add(-time.Duration(u*3) * 24 * time.Hour)
		rev := 0.0
		for k := range orders {
			rev += float64(10 + u*7 + k)
		}
		want[id] = buyer{math.Floor(float64(t0.Sub(newest)) / float64(24*time.Hour)), float64(orders), rev}
	}
	e.waitCaughtUp(20*time.Second, p)
	// The clock moves on (a second at a time) so the tasks publish their
	// summaries again until partition 0 has merged all four.
	var b *rfm.Boundaries
	testenv.WaitFor(t, 30*time.Second, "boundaries of every buyer", func() bool {
		e.clock.set(e.clock.now().Add(1100 * time.Millisecond))
		time.Sleep(50 * time.Millisecond)
		b = p.rfmLatest.Load()
		return b != nil && b.Buyers == users
	})
	var rs, fs, ms []float64
	for _, v := range want {
		rs, fs, ms = append(rs, v.r), append(fs, v.f), append(ms, v.m)
	}
	slices.Sort(rs)
	slices.Sort(fs)
	slices.Sort(ms)
	exact := &rfm.Boundaries{Scores: 5, R: rfm.Cuts(rs, 5), F: rfm.Cuts(fs, 5), M: rfm.Cuts(ms, 5)}
	if !b.SameCuts(exact) {
		t.Fatalf("merged boundaries %+v, exact %+v", b, exact)
	}
	for id, v := range want {
		r, f, m := exact.Score(v.r, v.f, v.m)
		g := rfm.Match(rfm.DefaultGroups(), r, f, m)
		waitVector(t, e, id, func(feats map[string]any, segs []string) bool {
			return feats["rfm_group"] == g && feats["rfm_r"] == float64(r) && slices.Contains(segs, rfm.SegmentPrefix+g)
		})
	}
	p.mu.Lock()
	for part, tk := range p.tasks {
		tk.work.Lock()
		if tk.rfmB == nil || tk.rfmB.Version != b.Version {
			t.Errorf("partition %d scores with %+v, want version %d", part, tk.rfmB, b.Version)
		}
		tk.work.Unlock()
	}
	p.mu.Unlock()
	// One order each: churn_risk = sigmoid(2 - orders) > 0.7; revenue > 200
	// from u28 on.
	for u := 30; u < users; u += 5 {
		waitVector(t, e, fmt.Sprintf("u%02d", u), func(feats map[string]any, segs []string) bool {
			return feats["churn_risk"].(float64) > 0.7 && slices.Contains(segs, "high_value_churn")
		})
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	records := readTopic(t, e, e.cfg.Kafka.Topics.RFM)
	var last *rfm.Boundaries
	for _, r := range records {
		if string(r.Key) == rfmBoundariesKey {
			if last, _ = rfm.DecodeBoundaries(r.Value); last == nil {
				t.Fatal("undecodable boundaries record")
			}
		}
	}
	if last == nil || last.Version < b.Version {
		t.Fatalf("RFM topic's last boundaries %+v, processor's version %d", last, b.Version)
	}
	// A restart opens with the stored boundaries: no change repeated.
	p2 := e.processor(Options{}, "")
	stop2 := e.run(p2)
	e.waitCaughtUp(20*time.Second, p2)
	time.Sleep(500 * time.Millisecond)
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	members := segmentChanges(t, e)
	for id := range want {
		rfmGroups := 0
		for _, s := range members[id] {
			if len(s) > 4 && s[:4] == rfm.SegmentPrefix {
				rfmGroups++
			}
		}
		if rfmGroups != 1 {
			t.Errorf("%s is in %d rfm groups on the segments topic: %v", id, rfmGroups, members[id])
		}
	}
}
