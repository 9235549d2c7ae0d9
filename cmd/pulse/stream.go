package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/stream"
	"golang.org/x/sync/errgroup"
)

// runStream is `pulse stream -config FILE`: the feature processor, with
// /metrics, /healthz and /readyz on stream.listen.
func runStream(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("stream", flag.ExitOnError)
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
	proc, err := startStream(ctx, g, cfg, store)
	if err != nil {
		return err
	}
	if err := serveHealth(ctx, g, cfg.Stream.Listen, "pulse-stream", func(context.Context) error { return proc.Ready() }); err != nil {
		return err
	}
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// startStream runs the stream processor in g until ctx ends. The caller
// owns store and closes it after g is done. `pulse dev` calls it with its
// Pebble store; the Processor's Ready says when partitions are restored.
func startStream(ctx context.Context, g *errgroup.Group, cfg *config.Config, store featurestore.Store) (*stream.Processor, error) {
	proc, err := stream.New(cfg, store, stream.Options{Log: slog.Default()})
	if err != nil {
		return nil, err
	}
	g.Go(func() error { return proc.Run(ctx) })
	return proc, nil
}
