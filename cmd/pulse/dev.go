package main

import (
	"context"

	"github.com/pulse-rt/pulse/internal/system"
)

func runDev(ctx context.Context, args []string) error {
	fl := newCommand("dev", "")
	demoTraffic := fl.Bool("demo", false, "generate realistic e-commerce traffic, so segments move within seconds")
	cfg, err := fl.load(args)
	if err != nil {
		return err
	}
	return system.Dev(ctx, cfg, system.DevOptions{Demo: *demoTraffic, ClickHouseTCP: 9000, ClickHouseHTTP: 8123})
}

func runIngest(ctx context.Context, args []string) error {
	cfg, err := newCommand("ingest", "pulse.yaml").load(args)
	if err != nil {
		return err
	}
	return run(ctx, cfg, (*system.System).StartIngest)
}
