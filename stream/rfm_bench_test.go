package stream

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
)

// benchAutoFeatures are added to testConfig in both arms of
// BenchmarkFullPathAuto: RFM's recency feature.
const benchAutoFeatures = `
  - name: last_order_at
    agg: last
    event: Order Completed
    field: timestamp
  - name: days_since_last_order
    expr: 'last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1'
`

// benchAuto is the rfm block and two traits of the "with" arm.
const benchAuto = `
models:
  - name: a
    path: %s
    features: [orders_lifetime, revenue_24h]
  - name: b
    path: %s
    features: [orders_30d, max_order_7d, products_24h]
traits:
  - name: trait_a
    model: a
  - name: trait_b
    model: b
rfm:
  recency: days_since_last_order
  frequency: orders_lifetime
  monetary: revenue_24h
  refresh: 1s
`

// BenchmarkFullPathAuto: the full path (as FullPath/uniform: kfake ->
// stream -> Pebble store) without and with an rfm block and two traits,
// each run on its own state topics,
// in the same run on the same events; the rfm topic holds boundaries
// before the "with" arm starts, so every buyer is scored and grouped.
//
//	go test ./stream -run '^$' -bench FullPathAuto -benchtime 1x
func BenchmarkFullPathAuto(b *testing.B) {
	n := benchN()
	e := newEnv(b, nil)
	benchEvents(b, e, n, 50_000, false)
	ma, _ := filepath.Abs("testdata/models/bench_a.json")
	mb, _ := filepath.Abs("testdata/models/bench_b.json")
	base := strings2(testConfig, "segments:", benchAutoFeatures+"segments:")
	parse := func(extra string) *config.Config {
		cfg, err := config.Parse([]byte(base+extra), "bench.yaml")
		if err != nil {
			b.Fatal(err)
		}
		cfg.Kafka = e.cfg.Kafka
		cfg.Kafka.Topics.RFM = e.cfg.Kafka.Topics.Events + ".rfm"
		return cfg
	}
	without, with := parse(""), parse(fmt.Sprintf(benchAuto, ma, mb))
	i := 0
	for b.Loop() {
		for _, arm := range []struct {
			name string
			cfg  *config.Config
		}{{"without", without}, {"with", with}, {"without", without}, {"with", with}} {
			i++
			rate, cpu := benchArm(b, e, arm.cfg, n, i)
			b.Logf("%s: %.0f events/s, %.2f cpu-µs/event", arm.name, rate, cpu)
			b.ReportMetric(rate, arm.name+"-events/s")
			b.ReportMetric(cpu, arm.name+"-cpu-µs/event")
		}
	}
}

func strings2(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	return s
}

// benchArm runs one processor of cfg over the env's n events into a fresh
// Pebble store; events/s and CPU µs per event from the group's join.
func benchArm(b *testing.B, e *env, cfg *config.Config, n, run int) (float64, float64) {
	store, err := featurestore.OpenPebble(filepath.Join(b.TempDir(), "store"), featurestore.PebbleOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	c := *cfg
	c.Stream.Group = e.cfg.Stream.Group + fmt.Sprint(time.Now().UnixNano())
	// Each run its own state topics: a run restores nothing of another.
	// The "with" runs share the RFM topic: the second starts with
	// boundaries, as a running system does.
	tp := &c.Kafka.Topics
	suffix := fmt.Sprintf(".%d", run)
	tp.State, tp.Seeds, tp.Activations, tp.Segments, tp.Traits = tp.State+suffix, tp.Seeds+suffix, tp.Activations+suffix,
		tp.Segments+suffix, tp.Traits+suffix
	c.DataDir = b.TempDir()
	p, err := New(&c, store, Options{Now: e.clock.now})
	if err != nil {
		b.Fatal(err)
	}
	// A label per run, so a profile tells the arms apart
	// (-cpuprofile, then pprof -tagfocus run=2).
	var stop func() error
	pprof.Do(context.Background(), pprof.Labels("run", fmt.Sprint(run)), func(context.Context) { stop = e.run(p) })
	for p.Ready() != nil {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	cpu0 := cpuTime()
	e.waitCaughtUp(5*time.Minute, p)
	rate := float64(n) / time.Since(start).Seconds()
	cpu := float64((cpuTime() - cpu0).Microseconds()) / float64(n)
	stop()
	return rate, cpu
}
