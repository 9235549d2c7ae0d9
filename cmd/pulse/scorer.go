package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/system"
	"github.com/pulse-rt/pulse/loadtest"
	"github.com/pulse-rt/pulse/scorer"
)

// runScorer is `pulse scorer -config FILE`: the serving API over the
// configured online store. SIGHUP (or POST /v1/admin/reload) re-reads the
// config file and the model files.
func runScorer(ctx context.Context, args []string) error {
	fl := newCommand("scorer", "pulse.yaml")
	cfg, err := fl.load(args)
	if err != nil {
		return err
	}
	system.TuneGC(system.ScorerGCPercent)
	return run(ctx, cfg, (*system.System).OpenStore, func(sys *system.System) error {
		return sys.StartScorer(system.Serving(scorer.WithConfigPath(fl.config)))
	})
}

// loadtestPredict is `pulse loadtest predict`: open-loop predictions against
// a scorer (at -url, or with -embedded one started here over a store filled
// with -users users), with a bare fasthttp handler as the same-run baseline.
func loadtestPredict(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("loadtest predict", flag.ExitOnError)
	var o loadtest.PredictOptions
	o.Flags(fl)
	var t system.PredictTargetOptions
	t.Flags(fl)
	embedded := fl.Bool("embedded", false, "start a scorer in this process over a store filled with -users users (the e-commerce example's model)")
	floor := fl.Bool("floor", false, "with -embedded -store redis: also measure, each phase, a bare handler that reads the request's user from Redis (no cache) before answering: the floor under a prediction that misses")
	cpuprofile := fl.String("cpuprofile", "", "write a CPU profile of this process to FILE")
	fl.Parse(args)
	if *embedded {
		// The scorer runs in this process: give it `pulse scorer`'s
		// collector setting (the baseline handler shares it).
		system.TuneGC(system.ScorerGCPercent)
		t.Users = o.Users
		sys, err := system.PredictTarget(ctx, t)
		if err != nil {
			return err
		}
		defer sys.Close()
		if c, ok := sys.Store.(featurestore.CacheReporter); ok && t.RowCacheMB >= 0 {
			o.StoreCache = func() (uint64, uint64) { s := c.CacheStats(); return s.Hits, s.Misses }
		}
		o.URL, o.Key = sys.ScorerURL(), sys.Config.KeyWithScope(config.ScopeRead)
		if *floor {
			if t.Store != "redis" {
				return fmt.Errorf("-floor: needs -store redis")
			}
			f, closeFloor, err := loadtest.RedisFloor(t.RedisAddr)
			if err != nil {
				return err
			}
			defer closeFloor()
			o.Floor = f
		}
		if t.Store == "redis" {
			read, closeFn := loadtest.RedisServerCPU(t.RedisAddr)
			defer closeFn()
			o.ServerCPU = read
		}
	}
	stopProfile, err := loadtest.StartCPUProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stopProfile()
	_, err = loadtest.Predict(ctx, o, os.Stdout)
	return err
}
