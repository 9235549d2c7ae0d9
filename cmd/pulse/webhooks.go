package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/demo"
	"github.com/pulse-rt/pulse/webhook"
	"golang.org/x/sync/errgroup"
)

// startWebhooks delivers segment webhooks in g when any segment has one.
func startWebhooks(ctx context.Context, g *errgroup.Group, cfg *config.Config) error {
	svc := webhook.New(cfg, webhook.Options{Log: slog.Default()})
	if !svc.Enabled() {
		return nil
	}
	g.Go(func() error { return svc.Run(ctx) })
	return nil
}

// startDemo runs the e-commerce traffic generator of `pulse dev --demo`
// against this process's ingest, with the config's first write key.
func startDemo(ctx context.Context, g *errgroup.Group, cfg *config.Config) error {
	var key string
	for _, k := range cfg.Keys {
		if k.HasScope(config.ScopeWrite) {
			key = k.Key
			break
		}
	}
	if key == "" {
		return fmt.Errorf("--demo needs an API key with the write scope in the config")
	}
	g.Go(func() error {
		return demo.Run(ctx, demo.Options{URL: "http://" + cfg.Ingest.Listen, WriteKey: key})
	})
	return nil
}
