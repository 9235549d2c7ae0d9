package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/scorer"
	"golang.org/x/sync/errgroup"
)

// runScorer is `pulse scorer -config FILE`: the serving API over the
// configured online store. SIGHUP (or POST /v1/admin/reload) re-reads the
// config file and the model files.
func runScorer(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("scorer", flag.ExitOnError)
	path := fl.String("config", "pulse.yaml", "config file")
	fl.Parse(args)
	cfg, err := config.Load(*path)
	if err != nil {
		return configError(err)
	}
	store, err := featurestore.Open(cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	g, ctx := errgroup.WithContext(ctx)
	if err := startScorer(ctx, g, cfg, store, scorer.WithConfigPath(*path)); err != nil {
		return err
	}
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// startScorer runs the scorer on cfg.Scorer.Listen in g: the prediction log
// producer, the live segment feed, and model reload on SIGHUP. The caller
// owns store and closes it after g is done. extra options come last (for
// `pulse dev`: devScorerOptions).
func startScorer(ctx context.Context, g *errgroup.Group, cfg *config.Config, store featurestore.Store, extra ...scorer.Option) error {
	log := slog.Default()
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		return err
	}
	if *cfg.Kafka.CreateTopics {
		if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka); err != nil {
			cl.Close()
			return err
		}
	}
	live := scorer.NewLive(cfg, scorer.LiveOptions{Log: log})
	opts := append([]scorer.Option{scorer.WithPredictionLog(cl), scorer.WithLive(live), scorer.WithLogger(log)}, extra...)
	srv, err := scorer.New(cfg, store, opts...)
	if err != nil {
		cl.Close()
		return err
	}
	g.Go(func() error { return live.Run(ctx) })
	g.Go(func() error {
		defer cl.Close()
		return srv.Run(ctx)
	})
	g.Go(func() error {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				log.Info("SIGHUP: reloading models")
				if _, err := srv.Reload(); err != nil {
					log.Error("reload incomplete", "err", err)
				}
			}
		}
	})
	return nil
}

// devScorerOptions pre-fill the dashboard with the first read key: only for
// `pulse dev`, which listens on 127.0.0.1.
func devScorerOptions(cfg *config.Config) []scorer.Option {
	for _, k := range cfg.Keys {
		if k.HasScope(config.ScopeRead) {
			return []scorer.Option{scorer.WithDashboardKey(k.Key)}
		}
	}
	return nil
}
