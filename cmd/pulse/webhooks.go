package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/demo"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/webhook"
	"github.com/valyala/fasthttp"
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
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", *listen, err)
	}
	health := httpapi.NewHealth()
	srv := &fasthttp.Server{
		Name: "pulse-webhooks",
		Handler: func(c *fasthttp.RequestCtx) {
			if !health.Serve(c) {
				httpapi.WriteError(c, fasthttp.StatusNotFound, "no such endpoint: "+string(c.Path()))
			}
		},
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return svc.Run(ctx) })
	g.Go(func() error { return httpapi.Serve(ctx, srv, ln, slog.Default()) })
	g.Go(func() error {
		health.Watch(ctx, 2*time.Second, func(ctx context.Context) error { return kafka.Ping(ctx, cl) })
		return nil
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
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
