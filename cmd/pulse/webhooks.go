package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/system"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/webhook"
)

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
	sys := system.New(ctx, cfg, slog.Default())
	sys.OnClose(cl.Close)
	defer sys.Close()
	sys.Go(svc.Run)
	return serveHealth(sys, *listen, "pulse-webhooks", func(ctx context.Context) error { return kafka.Ping(ctx, cl) })
}
