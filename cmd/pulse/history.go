package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/internal/system"
)

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
