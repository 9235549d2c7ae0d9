package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/internal/system"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/webhook"
)

// runDev is `pulse dev`: every service in this process on embedded parts
// (system.Dev).
func runDev(ctx context.Context, args []string) error {
	fl := newCommand("dev", "")
	demoTraffic := fl.Bool("demo", false, "generate realistic e-commerce traffic, so segments move within seconds")
	destinations := fl.String("destinations-listen", "127.0.0.1:8085", "address of the destinations' admin API and /metrics")
	cfg, err := fl.load(args)
	if err != nil {
		return err
	}
	return system.Dev(ctx, cfg, system.DevOptions{Demo: *demoTraffic, ClickHouseTCP: 9000, ClickHouseHTTP: 8123, DestinationsListen: *destinations, ConfigPath: fl.config})
}

// runIngest is `pulse ingest -config FILE`: the tracking API into Kafka.
func runIngest(ctx context.Context, args []string) error {
	cfg, err := newCommand("ingest", "pulse.yaml").load(args)
	if err != nil {
		return err
	}
	return run(ctx, cfg, (*system.System).StartIngest)
}

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
		if err := sys.WatchDataDir(); err != nil {
			return err
		}
		if err := sys.StartStream(store, fl.config); err != nil {
			return err
		}
		return sys.ServeHealth(cfg.Stream.Listen, "pulse-stream", func(context.Context) error { return sys.StreamReady() })
	})
}

// runHistory is `pulse history`: the writer copying the Kafka topics into
// ClickHouse until interrupted.
func runHistory(ctx context.Context, args []string) error {
	fl := newCommand("history", "")
	batch := fl.Int("batch-rows", 50_000, "flush after this many records")
	interval := fl.Duration("flush-interval", time.Second, "flush a non-empty batch after this long")
	listen := fl.String("listen", "127.0.0.1:8084", "address of /metrics, /healthz and /readyz")
	cfg, err := fl.load(args)
	if err != nil {
		return err
	}
	if cfg.ClickHouse.Addr == "" {
		return fmt.Errorf("%w (set clickhouse.addr, e.g. 127.0.0.1:9000)", history.ErrDisabled)
	}
	w, err := history.NewWriter(cfg, history.WriterOptions{BatchRows: *batch, FlushInterval: *interval}, slog.Default())
	if err != nil {
		return err
	}
	conn, err := history.Open(cfg.ClickHouse)
	if err != nil {
		return err
	}
	return run(ctx, cfg, func(sys *system.System) error {
		sys.OnClose(func() { conn.Close() })
		sys.Go(w.Run)
		return sys.ServeHealth(*listen, "pulse-history", func(ctx context.Context) error { return history.Ping(ctx, conn) })
	})
}

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

// runDestinations is `pulse destinations -config FILE`: the configured
// destinations, with their admin API (pause, resume), /metrics, /healthz
// and /readyz on -listen.
func runDestinations(ctx context.Context, args []string) error {
	fl := newCommand("destinations", "pulse.yaml")
	listen := fl.String("listen", "127.0.0.1:8085", "address of the admin API, /metrics, /healthz and /readyz")
	cfg, err := fl.load(args)
	if err != nil {
		return err
	}
	if len(cfg.Destinations) == 0 {
		return fmt.Errorf("%s has no destinations: nothing to deliver", fl.config)
	}
	return run(ctx, cfg, func(sys *system.System) error { return sys.StartDestinations(*listen) })
}
