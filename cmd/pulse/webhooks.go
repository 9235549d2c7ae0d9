package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pulse-rt/pulse/internal/system"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/webhook"
)

// runWebhooks is `pulse webhooks -config FILE`: segment webhook delivery on
// its own, with /metrics, /healthz and /readyz on -listen.
func runWebhooks(ctx context.Context, args []string) error {
	fl := newCommand("webhooks", "pulse.yaml")
	listen := fl.String("listen", "127.0.0.1:8083", "address of /metrics, /healthz and /readyz")
	cfg, err := fl.load(args)
	if err != nil {
		return err
	}
	svc := webhook.New(cfg, webhook.Options{Log: slog.Default()})
	if !svc.Enabled() {
		return fmt.Errorf("no segment in %s has a webhook: nothing to deliver", fl.config)
	}
	cl, err := kafka.NewClient(cfg.Kafka)
	if err != nil {
		return err
	}
	return run(ctx, cfg, func(sys *system.System) error {
		sys.OnClose(cl.Close)
		sys.Go(svc.Run)
		return sys.ServeHealth(*listen, "pulse-webhooks", func(ctx context.Context) error { return kafka.Ping(ctx, cl) })
	})
}
