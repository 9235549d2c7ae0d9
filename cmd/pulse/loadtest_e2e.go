package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/loadtest"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/stream"
	"golang.org/x/sync/errgroup"
)

func init() {
	loadtests["freshness"] = loadtestFreshness
	loadtests["segments"] = loadtestSegments
}

// e2eProbeConfig adds to the measured config what the probes need: a
// count of probe events (a new user has a vector once its probe is
// processed, and enters e2eEnter), and a 2s-window count whose segment
// the user leaves when the window slides past the probe.
const e2eProbeConfig = `
features:
  - name: loadtest_probes
    agg: count
    event: ` + loadtest.ProbeEvent + `
  - name: loadtest_probes_2s
    agg: count
    event: ` + loadtest.ProbeEvent + `
    window: 2s
segments:
  - name: loadtest_probed
    rule: loadtest_probes >= 1
  - name: loadtest_probed_2s
    rule: loadtest_probes_2s >= 1
`

const (
	e2eEnter  = "loadtest_probed"
	e2eExpire = "loadtest_probed_2s"
)

// e2eSystem is every service of `pulse dev` the end-to-end targets cross,
// in this process on free ports: kfake, ingest, the stream processor, the
// Pebble online store and the scorer with its live feed.
type e2eSystem struct {
	cfg       *config.Config
	store     featurestore.Store
	ingestURL string
	scorerURL string
	writeKey  string
	readKey   string
	watch     *writeWatch
	stop      func()
}

// writeWatch is the stream's store, noting when each probe user's first
// vector was written: once Write returns, a Get serves it.
type writeWatch struct {
	featurestore.Store
	mu      sync.Mutex
	written map[string]time.Time
}

func (w *writeWatch) Write(ctx context.Context, batch []featurestore.Update) error {
	err := w.Store.Write(ctx, batch)
	if err != nil {
		return err
	}
	now := time.Now()
	for i := range batch {
		if id := batch[i].Vector.ID; strings.HasPrefix(id, "probe-") {
			w.mu.Lock()
			if _, ok := w.written[id]; !ok {
				w.written[id] = now
			}
			w.mu.Unlock()
		}
	}
	return nil
}

func (w *writeWatch) writtenAt(id string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.written[id]
	return t, ok
}

func startE2E(ctx context.Context, path string, quiet bool) (_ *e2eSystem, err error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, configError(err)
	}
	probe, err := config.Parse([]byte(e2eProbeConfig), "loadtest probes")
	if err != nil {
		return nil, err
	}
	cfg.Features = append(cfg.Features, probe.Features...)
	cfg.Segments = append(cfg.Segments, probe.Segments...)
	for i := range cfg.Segments {
		cfg.Segments[i].Webhook = nil // no receivers here
	}
	log := slog.Default()
	if quiet {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir, err := os.MkdirTemp("", "pulse-loadtest-*")
	if err != nil {
		return nil, err
	}
	cfg.DataDir = dir
	s := &e2eSystem{cfg: cfg}
	for _, k := range cfg.Keys {
		if s.writeKey == "" && k.HasScope(config.ScopeWrite) {
			s.writeKey = k.Key
		}
		if s.readKey == "" && k.HasScope(config.ScopeRead) {
			s.readKey = k.Key
		}
	}
	var closers []func()
	s.stop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		os.RemoveAll(dir)
	}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{Partitions: cfg.Kafka.Partitions})
	if err != nil {
		return nil, err
	}
	closers = append(closers, emb.Close)
	cfg.Kafka.Brokers = emb.Addrs()
	store, err := featurestore.OpenPebble(filepath.Join(dir, "store"), featurestore.PebbleOptions{Logger: log})
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { store.Close() })
	s.store = store
	s.watch = &writeWatch{Store: store, written: map[string]time.Time{}}

	ing, prod, err := newIngest(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	closers = append(closers, prod.Close)
	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	closers = append(closers, func() { cancel(); g.Wait() })

	ingLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g.Go(func() error { return ing.Serve(gctx, ingLn) })
	s.ingestURL = "http://" + ingLn.Addr().String()

	proc, err := stream.New(cfg, s.watch, stream.Options{Log: log})
	if err != nil {
		return nil, err
	}
	g.Go(func() error { return proc.Run(gctx) })

	live := scorer.NewLive(cfg, scorer.LiveOptions{Log: log, Backfill: -1})
	srv, err := scorer.New(cfg, store, scorer.WithLive(live), scorer.WithLogger(log))
	if err != nil {
		return nil, err
	}
	g.Go(func() error { return live.Run(gctx) })
	scLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g.Go(func() error { return srv.Serve(gctx, scLn) })
	s.scorerURL = "http://" + scLn.Addr().String()

	deadline := time.Now().Add(time.Minute)
	for proc.Ready() != nil || !live.Ready() {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("services not ready after a minute: stream: %v", proc.Ready())
		}
		select {
		case <-gctx.Done():
			return nil, fmt.Errorf("a service stopped while starting: %w", g.Wait())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return s, nil
}

func e2eProfile(file string) (func(), error) {
	if file == "" {
		return func() {}, nil
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// loadtestFreshness is `pulse loadtest freshness`: event accepted by
// ingest (HTTP 200) -> new value readable from the online store, through
// every service of `pulse dev` in this process.
func loadtestFreshness(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("loadtest freshness", flag.ExitOnError)
	var o loadtest.FreshnessOptions
	path := fl.String("config", "", "config to measure (default: the embedded e-commerce example), plus the probe features")
	fl.Float64Var(&o.Rate, "rate", 10_000, "events/s, open loop")
	fl.IntVar(&o.Batch, "batch", 100, "events per request (one of them the probe)")
	fl.DurationVar(&o.Duration, "duration", 10*time.Second, "measured length")
	fl.DurationVar(&o.Warmup, "warmup", 2*time.Second, "warm-up (sent, not measured)")
	fl.IntVar(&o.Users, "users", 100_000, "background user ids")
	fl.DurationVar(&o.Poll, "poll", 0, "poll the store for each probe's vector this often instead of hooking the store's writes (e.g. 1ms)")
	verbose := fl.Bool("v", false, "show the services' logs")
	cpuprofile := fl.String("cpuprofile", "", "write a CPU profile of this process to FILE")
	fl.Parse(args)
	sys, err := startE2E(ctx, *path, !*verbose)
	if err != nil {
		return err
	}
	defer sys.stop()
	stopProf, err := e2eProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stopProf()
	o.URL, o.WriteKey = sys.ingestURL, sys.writeKey
	if o.Poll == 0 {
		o.WrittenAt = sys.watch.writtenAt
	}
	o.Lookup = func(ctx context.Context, user string) (bool, error) {
		_, err := sys.store.Get(ctx, "user", user)
		if errors.Is(err, featurestore.ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	}
	fmt.Printf("in-process: kfake, ingest %s, stream (%d partitions, timer %s), Pebble store, scorer %s; GOMAXPROCS %d\n",
		sys.ingestURL, sys.cfg.Kafka.Partitions, sys.cfg.Stream.TimerInterval.D(), sys.scorerURL, runtimeProcs())
	_, err = loadtest.Freshness(ctx, o, os.Stdout)
	printStreamStats()
	printLoad()
	return err
}

// loadtestSegments is `pulse loadtest segments`: event accepted by ingest
// (HTTP 200) -> enter record on the scorer's SSE feed, and the lateness of
// window-expiry exits, through every service of `pulse dev` in this process.
func loadtestSegments(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("loadtest segments", flag.ExitOnError)
	var o loadtest.SegmentsOptions
	path := fl.String("config", "", "config to measure (default: the embedded e-commerce example), plus the probe features")
	fl.Float64Var(&o.Rate, "rate", 5_000, "events/s, open loop")
	fl.IntVar(&o.Batch, "batch", 50, "events per request (one of them the probe)")
	fl.DurationVar(&o.Duration, "duration", 10*time.Second, "measured length")
	fl.DurationVar(&o.Warmup, "warmup", 2*time.Second, "warm-up (sent, not measured)")
	fl.IntVar(&o.Users, "users", 100_000, "background user ids")
	expire := fl.Bool("expiry", true, "also measure the lateness of the 2s-window exits")
	verbose := fl.Bool("v", false, "show the services' logs")
	cpuprofile := fl.String("cpuprofile", "", "write a CPU profile of this process to FILE")
	fl.Parse(args)
	sys, err := startE2E(ctx, *path, !*verbose)
	if err != nil {
		return err
	}
	defer sys.stop()
	stopProf, err := e2eProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stopProf()
	o.URL, o.WriteKey, o.ScorerURL, o.ReadKey, o.Enter = sys.ingestURL, sys.writeKey, sys.scorerURL, sys.readKey, e2eEnter
	if *expire {
		o.Expire = e2eExpire
	}
	fmt.Printf("in-process: kfake, ingest %s, stream (%d partitions, timer %s), Pebble store, scorer %s; GOMAXPROCS %d\n",
		sys.ingestURL, sys.cfg.Kafka.Partitions, sys.cfg.Stream.TimerInterval.D(), sys.scorerURL, runtimeProcs())
	_, err = loadtest.Segments(ctx, o, os.Stdout)
	printStreamStats()
	printLoad()
	return err
}

func printLoad() {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average: %s", b)
	}
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// printStreamStats prints the stream's own timings of the run, to tell
// where the end-to-end time went.
func printStreamStats() {
	mfs, _ := prometheus.DefaultGatherer.Gather()
	for _, mf := range mfs {
		switch mf.GetName() {
		case "pulse_stream_batch_seconds", "pulse_stream_txn_seconds", "pulse_stream_event_to_store_seconds", "pulse_stream_batch_records":
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h.GetSampleCount() == 0 {
				continue
			}
			// The smallest bucket bound holding 99% of the samples.
			p99 := math.Inf(1)
			for _, b := range h.GetBucket() {
				if float64(b.GetCumulativeCount()) >= 0.99*float64(h.GetSampleCount()) {
					p99 = b.GetUpperBound()
					break
				}
			}
			fmt.Printf("%-40s n %8d mean %10.4f p99 <= %g\n", mf.GetName(), h.GetSampleCount(), h.GetSampleSum()/float64(h.GetSampleCount()), p99)
		}
	}
}
