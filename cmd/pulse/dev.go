package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/ingest"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
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
	return dev(ctx, cfg, devOptions{Demo: *demoTraffic, ClickHouseTCP: 9000, ClickHouseHTTP: 8123})
}

type devOptions struct {
	Demo bool // run the e-commerce traffic generator
	// Ports of the local clickhouse-server started when the config names
	// none and one is installed.
	ClickHouseTCP, ClickHouseHTTP int
}

// dev runs every service of `pulse dev` on cfg until ctx ends.
func dev(ctx context.Context, cfg *config.Config, o devOptions) error {
	log := slog.Default()

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
	kdir := filepath.Join(cfg.DataDir, "kafka")
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{Port: port, DataDir: kdir, Partitions: cfg.Kafka.Partitions})
	if err != nil {
		return err
	}
	defer emb.Close()
	cfg.Kafka.Brokers = emb.Addrs()
	log.Info("embedded kafka up", "addr", strings.Join(emb.Addrs(), ","), "data", kdir)

	store, err := featurestore.Open(cfg)
	if err != nil {
		return err
	}
	// Close the store after every service using it has stopped.
	defer store.Close()

	g, ctx := errgroup.WithContext(ctx)
	if _, err := startIngest(ctx, g, cfg); err != nil {
		return err
	}
	if _, err := startStream(ctx, g, cfg, store); err != nil {
		return err
	}
	if err := startScorer(ctx, g, cfg, store, devScorerOptions(cfg)...); err != nil {
		return err
	}
	if err := startWebhooks(ctx, g, cfg); err != nil {
		return err
	}
	if cfg.ClickHouse.Addr == "" {
		dir := filepath.Join(cfg.DataDir, "clickhouse")
		ch, err := history.StartLocal(ctx, dir, o.ClickHouseTCP, o.ClickHouseHTTP)
		switch {
		case errors.Is(err, history.ErrNoLocalServer):
			log.Info("history is off: clickhouse-server is not installed (apt-get install clickhouse-server, then restart pulse dev)")
		case err != nil:
			log.Warn("history is off: cannot start a local ClickHouse", "err", err)
		default:
			defer ch.Stop()
			cfg.ClickHouse.Addr = ch.Addr
			log.Info("local ClickHouse up", "native", ch.Addr, "http", ch.HTTPAddr, "data", dir)
		}
	}
	if cfg.ClickHouse.Addr != "" {
		w, err := history.NewWriter(cfg, history.WriterOptions{}, log)
		if err != nil {
			return err
		}
		g.Go(func() error { return w.Run(ctx) })
	}
	if o.Demo {
		if err := startDemo(ctx, g, cfg); err != nil {
			return err
		}
	}
	printDevBanner(cfg, o.Demo)
	return untilStopped(g)
}

func loopback(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// newIngest makes an ingest server and its producer, creating the topics
// first when the config says so. Close the client after the server.
func newIngest(ctx context.Context, cfg *config.Config, log *slog.Logger) (*ingest.Server, *kgo.Client, error) {
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		return nil, nil, err
	}
	if *cfg.Kafka.CreateTopics {
		if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka); err != nil {
			cl.Close()
			return nil, nil, err
		}
	}
	return ingest.New(cfg, cl, log), cl, nil
}

// startIngest runs an ingest server on the config's listen address in g.
func startIngest(ctx context.Context, g *errgroup.Group, cfg *config.Config) (*ingest.Server, error) {
	srv, cl, err := newIngest(ctx, cfg, slog.Default())
	if err != nil {
		return nil, err
	}
	g.Go(func() error {
		defer cl.Close()
		return srv.Run(ctx)
	})
	return srv, nil
}

func runIngest(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("ingest", flag.ExitOnError)
	path := fl.String("config", "pulse.yaml", "config file")
	fl.Parse(args)
	cfg, err := config.Load(*path)
	if err != nil {
		return configError(err)
	}
	g, ctx := errgroup.WithContext(ctx)
	if _, err := startIngest(ctx, g, cfg); err != nil {
		return err
	}
	return untilStopped(g)
}

func configError(err error) error {
	if errs, ok := config.AsErrors(err); ok {
		return fmt.Errorf("invalid config:\n%s", errs.Error())
	}
	return err
}

func printDevBanner(cfg *config.Config, demo bool) {
	var write, read string
	for _, k := range cfg.Keys {
		if write == "" && k.HasScope(config.ScopeWrite) {
			write = k.Key
		}
		if read == "" && k.HasScope(config.ScopeRead) {
			read = k.Key
		}
	}
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
      -d '{"userId":"612","event":"Order Completed","properties":{"revenue":42}}'
    curl -s http://%[2]s/v1/entities/user/612 -H 'Authorization: Bearer %[5]s'
    curl -s http://%[2]s/v1/predict -H 'Content-Type: application/json' \
      -d '{"api_key":"%[5]s","model":"%[7]s","features":[{"user":{"id":612}}]}'
`, cfg.Ingest.Listen, cfg.Scorer.Listen, strings.Join(cfg.Kafka.Brokers, ","), write, read, cfg.Kafka.Topics.Events, model, chLine)
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
