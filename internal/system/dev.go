package system

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/demo"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/scorer"
)

// devMemTableSize is the stream's Pebble memtable in pulse dev.
const devMemTableSize = 4 << 20

// devRetention is kafka.retention in pulse dev when the config sets none:
// the week a broker keeps by default. The embedded Kafka's own default is
// never (kafka.StartEmbedded: so that its compacted topics keep every
// key, as Kafka's do), so the topics that expire records are given this.
const devRetention = config.Duration(7 * 24 * time.Hour)

// DevOptions shape `pulse dev`.
type DevOptions struct {
	Demo bool // run the e-commerce traffic generator
	// Ports of the local clickhouse-server started when the config names
	// none and one is installed.
	ClickHouseTCP, ClickHouseHTTP int
	// DestinationsListen is where the destinations' admin API listens
	// (on 127.0.0.1 whatever the host), when the config has destinations.
	DestinationsListen string
	// ConfigPath is the config file's path ("" for the embedded example),
	// written with the rest to <data_dir>/dev.json for the commands run
	// beside dev (LoadBeside).
	ConfigPath string
}

// Dev runs every service of `pulse dev` on cfg until ctx ends: an
// embedded Kafka (on the port of the config's first broker, its log under
// the data dir), the config's online store, ingest, the stream, the scorer
// as `pulse scorer` runs it (handing the dashboard the first key with the
// read scope alone: only here, where it listens on 127.0.0.1), webhooks, the
// configured destinations (their admin API on o.DestinationsListen), the
// history (into a local clickhouse-server when the config names no
// ClickHouse and one is installed), and with o.Demo the e-commerce traffic
// generator; then it prints where each part listens.
func Dev(ctx context.Context, cfg *config.Config, o DevOptions) error {
	// pulse dev binds 127.0.0.1 only, whatever the config says.
	for _, a := range []*string{&cfg.Ingest.Listen, &cfg.Scorer.Listen, &cfg.Stream.Listen} {
		*a = loopback(*a)
	}
	port := 9092
	if len(cfg.Kafka.Brokers) > 0 {
		if _, p, err := net.SplitHostPort(cfg.Kafka.Brokers[0]); err == nil {
			port, _ = strconv.Atoi(p)
		}
	}
	if cfg.Kafka.Retention == 0 {
		cfg.Kafka.Retention = devRetention
	}
	sys := New(ctx, cfg, slog.Default())
	defer sys.Close()
	if err := sys.WatchDataDir(); err != nil {
		return err
	}
	// Dev's traffic is small: 4 MiB memtables bound each partition's
	// Pebble WAL to about 26 MiB of disk (the default 32 MiB: 211 MiB).
	sys.StreamMemTableSize = devMemTableSize
	if err := sys.StartKafka(kafka.EmbeddedOptions{Port: port, DataDir: filepath.Join(cfg.DataDir, "kafka"), Partitions: cfg.Kafka.Partitions}); err != nil {
		return err
	}
	if err := sys.OpenStore(); err != nil {
		return err
	}
	if err := sys.StartIngest(); err != nil {
		return err
	}
	if err := sys.StartStream(nil, ""); err != nil {
		return err
	}
	var serving []scorer.Option
	if key := dashboardKey(cfg); key != "" {
		serving = append(serving, scorer.WithDashboardKey(key))
	} else {
		slog.Warn("no key with the read scope alone in the config: the dashboard will ask for a read key")
	}
	if err := sys.StartScorer(Serving(serving...)); err != nil {
		return err
	}
	sys.StartWebhooks()
	if err := sys.StartDestinations(loopback(o.DestinationsListen)); err != nil {
		return err
	}
	if err := sys.StartHistory(&LocalClickHouse{TCP: o.ClickHouseTCP, HTTP: o.ClickHouseHTTP}); err != nil {
		return err
	}
	if o.Demo {
		// The e-commerce traffic generator, against this process's ingest.
		key := cfg.KeyWithScope(config.ScopeWrite)
		if key == "" {
			return fmt.Errorf("--demo needs an API key with the write scope in the config")
		}
		sys.Go(func(ctx context.Context) error {
			return demo.Run(ctx, demo.Options{URL: "http://" + cfg.Ingest.Listen, WriteKey: key})
		})
	}
	printDevBanner(cfg, o.Demo, sys.DestinationsURL())
	remove, err := writeDevState(cfg.DataDir, devState(cfg, o.ConfigPath))
	if err != nil {
		return err
	}
	defer remove()
	return sys.Wait()
}

// devState is what Dev runs on cfg, once every part is up.
func devState(cfg *config.Config, configPath string) DevState {
	if configPath != "" {
		if abs, err := filepath.Abs(configPath); err == nil {
			configPath = abs
		}
	}
	st := DevState{PID: os.Getpid(), Config: configPath, Kafka: cfg.Kafka.Brokers,
		Ingest: cfg.Ingest.Listen, Scorer: cfg.Scorer.Listen}
	if cfg.ClickHouse.Addr != "" {
		st.ClickHouse, st.Database = cfg.ClickHouse.Addr, cfg.ClickHouse.Database
	}
	if cfg.Store.Backend != "redis" {
		st.Store = cfg.Store.Path
		if abs, err := filepath.Abs(st.Store); err == nil {
			st.Store = abs
		}
	}
	return st
}

// dashboardKey is the first configured key with the read scope and no
// other, the only kind the scorer hands to the dashboard: a key that can
// also write or reload must not reach every page that opens it.
func dashboardKey(cfg *config.Config) string {
	for _, k := range cfg.Keys {
		if len(k.Scopes) == 1 && k.HasScope(config.ScopeRead) {
			return k.Key
		}
	}
	return ""
}

func loopback(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}

func printDevBanner(cfg *config.Config, demo bool, destinations string) {
	write, read := cfg.KeyWithScope(config.ScopeWrite), cfg.KeyWithScope(config.ScopeRead)
	chLine := "off (install clickhouse-server to keep the history)"
	if cfg.ClickHouse.Addr != "" {
		chLine = fmt.Sprintf("%s                (clickhouse-client --port %s -d %s)", cfg.ClickHouse.Addr, portOf(cfg.ClickHouse.Addr), cfg.ClickHouse.Database)
	}
	model := "MODEL"
	if len(cfg.Models) > 0 {
		model = cfg.Models[0].Name
	}
	fmt.Printf(`
  Pulse dev is running.

  Dashboard             http://%[2]s/                 read key: %[5]s
  Ingest (Segment API)  http://%[1]s/v1/batch         write key: %[4]s
  Scorer                http://%[2]s/v1/predict
  Kafka                 %[3]s                (kcat -b %[3]s -t %[6]s -C)
  History (ClickHouse)  %[8]s

  Try:
    curl -s http://%[1]s/v1/track -u %[4]s: -H 'Content-Type: application/json' \
      -d '{"userId":"612","event":"Order Completed","properties":{"revenue":600}}'
    curl -s http://%[2]s/v1/entities/user/612 -H 'Authorization: Bearer %[5]s'
    curl -s http://%[2]s/v1/predict -H 'Content-Type: application/json' \
      -d '{"api_key":"%[5]s","model":"%[7]s","features":[{"user":{"id":612}}]}'
`, cfg.Ingest.Listen, cfg.Scorer.Listen, strings.Join(cfg.Kafka.Brokers, ","), write, read, cfg.Kafka.Topics.Events, model, chLine)
	if destinations != "" {
		fmt.Printf("  Destinations (%d)      %s/v1/destinations  (admin key; POST .../{name}/pause|resume)\n", len(cfg.Destinations), destinations)
	}
	if demo {
		fmt.Println("\n  Demo traffic is on: open the dashboard and watch the segments move.")
	}
	fmt.Println()
}

func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return p
}
