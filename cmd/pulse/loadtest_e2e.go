package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/system"
	"github.com/pulse-rt/pulse/loadtest"
)

// e2eFlags are the flags `loadtest freshness` and `loadtest segments`
// share besides their traffic's: the config measured and the reporting.
type e2eFlags struct {
	path, cpuprofile string
	verbose          bool
}

func newE2EFlags(fl *flag.FlagSet) *e2eFlags {
	e := &e2eFlags{}
	fl.StringVar(&e.path, "config", "", "config to measure (default: the embedded e-commerce example), plus the probe features")
	fl.BoolVar(&e.verbose, "v", false, "show the services' logs")
	fl.StringVar(&e.cpuprofile, "cpuprofile", "", "write a CPU profile of this process to FILE")
	return e
}

// run measures through every service of `pulse dev` in this process
// (system.EndToEnd), then prints the stream's own timings and the load.
func (e *e2eFlags) run(ctx context.Context, measure func(*system.System, *loadtest.WriteWatch) error) error {
	cfg, err := loadConfig(e.path)
	if err != nil {
		return configError(err)
	}
	var log *slog.Logger
	if e.verbose {
		log = slog.Default()
	}
	sys, watch, err := system.EndToEnd(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer sys.Close()
	stopProfile, err := loadtest.StartCPUProfile(e.cpuprofile)
	if err != nil {
		return err
	}
	defer stopProfile()
	fmt.Printf("in-process: kfake, ingest %s, stream (%d partitions, timer %s), Pebble store, scorer %s; GOMAXPROCS %d\n",
		sys.IngestURL(), cfg.Kafka.Partitions, cfg.Stream.TimerInterval.D(), sys.ScorerURL(), runtime.GOMAXPROCS(0))
	err = measure(sys, watch)
	loadtest.PrintStreamStats(os.Stdout)
	loadtest.PrintLoad(os.Stdout)
	return err
}

// loadtestFreshness is `pulse loadtest freshness`: event accepted by
// ingest (HTTP 200) -> new value readable from the online store, through
// every service of `pulse dev` in this process.
func loadtestFreshness(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("loadtest freshness", flag.ExitOnError)
	e := newE2EFlags(fl)
	var o loadtest.FreshnessOptions
	o.Flags(fl)
	poll := fl.Duration("poll", 0, "poll the store for each probe's vector this often instead of hooking the store's writes (e.g. 1ms)")
	fl.Parse(args)
	return e.run(ctx, func(sys *system.System, watch *loadtest.WriteWatch) error {
		o.URL, o.WriteKey, o.Poll = sys.IngestURL(), sys.Config.KeyWithScope(config.ScopeWrite), *poll
		if o.Poll == 0 {
			o.WrittenAt = watch.WrittenAt
		}
		o.Lookup = func(ctx context.Context, user string) (bool, error) {
			_, err := sys.Store.Get(ctx, "user", user)
			if errors.Is(err, featurestore.ErrNotFound) {
				return false, nil
			}
			return err == nil, err
		}
		_, err := loadtest.Freshness(ctx, o, os.Stdout)
		return err
	})
}

// loadtestSegments is `pulse loadtest segments`: event accepted by ingest
// (HTTP 200) -> enter record on the scorer's SSE feed, and the lateness of
// window-expiry exits, through every service of `pulse dev` in this process.
func loadtestSegments(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("loadtest segments", flag.ExitOnError)
	e := newE2EFlags(fl)
	var o loadtest.SegmentsOptions
	o.Flags(fl)
	expire := fl.Bool("expiry", true, "also measure the lateness of the 2s-window exits")
	fl.Parse(args)
	return e.run(ctx, func(sys *system.System, _ *loadtest.WriteWatch) error {
		o.URL, o.WriteKey, o.ScorerURL = sys.IngestURL(), sys.Config.KeyWithScope(config.ScopeWrite), sys.ScorerURL()
		o.ReadKey, o.Enter = sys.Config.KeyWithScope(config.ScopeRead), loadtest.ProbeEnter
		if *expire {
			o.Expire = loadtest.ProbeExpire
		}
		_, err := loadtest.Segments(ctx, o, os.Stdout)
		return err
	})
}
