package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/stream"
	"golang.org/x/sync/errgroup"
)

// runStream is `pulse stream -config FILE`: the feature processor, with
// /metrics, /healthz and /readyz on stream.listen. SIGHUP re-reads the
// config (see superviseStream).
func runStream(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("stream", flag.ExitOnError)
	path := fl.String("config", "pulse.yaml", "config file")
	fl.Parse(args)
	cfg, err := config.Load(*path)
	if err != nil {
		return configError(err)
	}
	store, err := featurestore.OpenWriter(cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	g, ctx := errgroup.WithContext(ctx)
	var current atomic.Pointer[stream.Processor]
	g.Go(func() error { return superviseStream(ctx, *path, cfg, store, reload, &current) })
	ready := func(context.Context) error {
		if p := current.Load(); p != nil {
			return p.Ready()
		}
		return errors.New("starting")
	}
	if err := serveHealth(ctx, g, cfg.Stream.Listen, "pulse-stream", ready); err != nil {
		return err
	}
	return untilStopped(g)
}

// superviseStream runs the stream processor until ctx ends. On a signal on
// reload it re-reads the config at path and, when it is valid, stops the
// processor cleanly and starts one on the new config: its tasks reopen
// from their Pebble state, so a changed segment rule re-evaluates the
// stored members (their enters and exits are emitted as usual) and a new
// feature starts. An invalid config is logged and the running processor
// goes on. Kafka, store and listen settings need a restart.
func superviseStream(ctx context.Context, path string, cfg *config.Config, store featurestore.Store, reload <-chan struct{}, current *atomic.Pointer[stream.Processor]) error {
	log := slog.Default()
	for {
		proc, err := stream.New(cfg, store, stream.Options{Log: log})
		if err != nil {
			return err
		}
		current.Store(proc)
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- proc.Run(pctx) }()
		var next *config.Config
		for next == nil {
			select {
			case err := <-done:
				cancel()
				return err
			case <-reload:
				c, err := config.Load(path)
				if err != nil {
					log.Error("reload: config not reloaded; the stream goes on with the one in force", "path", path, "err", configError(err))
					continue
				}
				if errs := checkConfig(c, path); len(errs) > 0 {
					log.Error("reload: config not reloaded; the stream goes on with the one in force", "path", path, "err", fmt.Sprintf("%d problem(s):\n%s", len(errs), errs.Error()))
					continue
				}
				next = c
			}
		}
		log.Info("reload: restarting the stream processor on the new config", "path", path)
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		cfg = next
	}
}

// startStream runs the stream processor in g until ctx ends. The caller
// owns store and closes it after g is done. `pulse dev` calls it with its
// Pebble store; the Processor's Ready says when partitions are restored.
func startStream(ctx context.Context, g *errgroup.Group, cfg *config.Config, store featurestore.Store) (*stream.Processor, error) {
	proc, err := stream.New(cfg, store, stream.Options{Log: slog.Default()})
	if err != nil {
		return nil, err
	}
	g.Go(func() error { return proc.Run(ctx) })
	return proc, nil
}
