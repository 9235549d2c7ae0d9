package main

import (
	"context"
	"flag"
	"log/slog"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/system"
)

// runStream is `pulse stream -config FILE`: the feature processor, with
// /metrics, /healthz and /readyz on stream.listen. SIGHUP re-reads the
// config and, when it is valid, restarts the processor on it.
func runStream(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("stream", flag.ExitOnError)
	path := fl.String("config", "pulse.yaml", "config file")
	fl.Parse(args)
	cfg, err := config.Load(*path)
	if err != nil {
		return configError(err)
	}
	store, err := featurestore.OpenWriter(cfg)
	if err != nil {
		return err
	}
	sys := system.New(ctx, cfg, slog.Default())
	sys.OnClose(func() { store.Close() })
	defer sys.Close()
	if err := sys.StartStream(store, *path); err != nil {
		return err
	}
	return serveHealth(sys, cfg.Stream.Listen, "pulse-stream", func(context.Context) error { return sys.StreamReady() })
}
