package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/internal/system"
)

// runHistory is `pulse history`: the writer copying the Kafka topics into
// ClickHouse until interrupted.
func runHistory(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("history", flag.ExitOnError)
	path := fl.String("config", "", "config file (default: the embedded e-commerce example)")
	batch := fl.Int("batch-rows", 50_000, "flush after this many records")
	interval := fl.Duration("flush-interval", time.Second, "flush a non-empty batch after this long")
	listen := fl.String("listen", "127.0.0.1:8084", "address of /metrics, /healthz and /readyz")
	fl.Parse(args)
	cfg, err := loadConfig(*path)
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
	sys := system.New(ctx, cfg, slog.Default())
	sys.OnClose(func() { conn.Close() })
	defer sys.Close()
	sys.Go(w.Run)
	return serveHealth(sys, *listen, "pulse-history", func(ctx context.Context) error { return history.Ping(ctx, conn) })
}

// serveHealth serves /metrics, /healthz and /readyz for a service with no
// API of its own until sys stops.
func serveHealth(sys *system.System, addr, name string, ready func(context.Context) error) error {
	if err := sys.ServeHealth(addr, name, ready); err != nil {
		return err
	}
	return sys.Wait()
}
