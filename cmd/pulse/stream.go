package main

import (
	"context"

	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/system"
)

// runStream is `pulse stream -config FILE`: the feature processor, with
// /metrics, /healthz and /readyz on stream.listen. SIGHUP re-reads the
// config and, when it is valid, restarts the processor on it.
func runStream(ctx context.Context, args []string) error {
	fl := newCommand("stream", "pulse.yaml")
	cfg, err := fl.load(args)
	if err != nil {
		return err
	}
	store, err := featurestore.OpenWriter(cfg)
	if err != nil {
		return err
	}
	return run(ctx, cfg, func(sys *system.System) error {
		sys.OnClose(func() { store.Close() })
		if err := sys.StartStream(store, fl.config); err != nil {
			return err
		}
		return sys.ServeHealth(cfg.Stream.Listen, "pulse-stream", func(context.Context) error { return sys.StreamReady() })
	})
}
