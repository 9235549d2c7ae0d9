package main

import (
	"context"
	"flag"
	"log/slog"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/system"
)

func runDev(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("dev", flag.ExitOnError)
	path := fl.String("config", "", "config file (default: the embedded e-commerce example)")
	demoTraffic := fl.Bool("demo", false, "generate realistic e-commerce traffic, so segments move within seconds")
	fl.Parse(args)
	cfg, err := loadConfig(*path)
	if err != nil {
		return configError(err)
	}
	return system.Dev(ctx, cfg, system.DevOptions{Demo: *demoTraffic, ClickHouseTCP: 9000, ClickHouseHTTP: 8123})
}

func runIngest(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("ingest", flag.ExitOnError)
	path := fl.String("config", "pulse.yaml", "config file")
	fl.Parse(args)
	cfg, err := config.Load(*path)
	if err != nil {
		return configError(err)
	}
	sys := system.New(ctx, cfg, slog.Default())
	defer sys.Close()
	if err := sys.StartIngest(); err != nil {
		return err
	}
	return sys.Wait()
}
