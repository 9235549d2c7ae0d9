package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/system"
	"github.com/pulse-rt/pulse/loadtest"
)

// loadtestE2E is what `loadtest freshness` and `loadtest segments` share:
// the flags besides their own (flags), and the run through every service
// of `pulse dev` in this process (system.EndToEnd), measured by measure,
// then the stream's own timings and the load.
func loadtestE2E(ctx context.Context, name string, args []string, flags func(*flag.FlagSet), measure func(*system.System, *loadtest.WriteWatch) error) error {
	fl := newCommand("loadtest "+name, "")
	fl.Lookup("config").Usage = "config to measure (default: the embedded e-commerce example), plus the probe features"
	verbose := fl.Bool("v", false, "show the services' logs")
	cpuprofile := fl.String("cpuprofile", "", "write a CPU profile of this process to FILE")
	flags(fl.FlagSet)
	cfg, err := fl.load(args)
	if err != nil {
		return err
	}
	var log *slog.Logger
	if *verbose {
		log = slog.Default()
	}
	sys, watch, err := system.EndToEnd(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer sys.Close()
	stopProfile, err := loadtest.StartCPUProfile(*cpuprofile)
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
	var o loadtest.FreshnessOptions
	var poll time.Duration
	return loadtestE2E(ctx, "freshness", args, func(fl *flag.FlagSet) {
		o.Flags(fl)
		fl.DurationVar(&poll, "poll", 0, "poll the store for each probe's vector this often instead of hooking the store's writes (e.g. 1ms)")
	}, func(sys *system.System, watch *loadtest.WriteWatch) error {
		o.URL, o.WriteKey, o.Poll = sys.IngestURL(), sys.Config.KeyWithScope(config.ScopeWrite), poll
		if poll == 0 {
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
	var o loadtest.SegmentsOptions
	var expire bool
	return loadtestE2E(ctx, "segments", args, func(fl *flag.FlagSet) {
		o.Flags(fl)
		fl.BoolVar(&expire, "expiry", true, "also measure the lateness of the 2s-window exits")
	}, func(sys *system.System, _ *loadtest.WriteWatch) error {
		o.URL, o.WriteKey, o.ScorerURL = sys.IngestURL(), sys.Config.KeyWithScope(config.ScopeWrite), sys.ScorerURL()
		o.ReadKey, o.Enter = sys.Config.KeyWithScope(config.ScopeRead), loadtest.ProbeEnter
		if expire {
			o.Expire = loadtest.ProbeExpire
		}
		_, err := loadtest.Segments(ctx, o, os.Stdout)
		return err
	})
}
