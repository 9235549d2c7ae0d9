package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/demo"
	"github.com/pulse-rt/pulse/kafka"
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

// runWebhooks is `pulse webhooks -config FILE`: segment webhook delivery on
// its own, with /metrics, /healthz and /readyz on -listen.
func runWebhooks(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("webhooks", flag.ExitOnError)
	path := fl.String("config", "pulse.yaml", "config file")
	listen := fl.String("listen", "127.0.0.1:8083", "address of /metrics, /healthz and /readyz")
	fl.Parse(args)
	cfg, err := config.Load(*path)
	if err != nil {
		return configError(err)
	}
	svc := webhook.New(cfg, webhook.Options{Log: slog.Default()})
	if !svc.Enabled() {
		return fmt.Errorf("no segment in %s has a webhook: nothing to deliver", *path)
	}
	cl, err := kafka.NewClient(cfg.Kafka)
	if err != nil {
		return err
	}
	defer cl.Close()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return svc.Run(ctx) })
	if err := serveHealth(ctx, g, *listen, "pulse-webhooks", func(ctx context.Context) error { return kafka.Ping(ctx, cl) }); err != nil {
		return err
	}
	return untilStopped(g)
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
