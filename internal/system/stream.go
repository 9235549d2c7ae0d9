package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/stream"
	"github.com/pulse-rt/pulse/validate"
)

// StartStream runs the stream processor, writing through store (nil:
// s.Store; the end-to-end load tests pass a loadtest.WriteWatch over it).
// With reloadFrom (`pulse stream`), SIGHUP re-reads the config at that
// path and restarts the processor on it (superviseStream).
func (s *System) StartStream(store featurestore.Store, reloadFrom string) error {
	if store == nil {
		store = s.Store
	}
	if reloadFrom != "" {
		reload := make(chan struct{}, 1)
		s.g.Go(func() error { forwardHUP(s.ctx, reload); return nil })
		s.g.Go(func() error { return superviseStream(s.ctx, reloadFrom, s.Config, store, reload, &s.stream) })
		return nil
	}
	proc, err := stream.New(s.Config, store, stream.Options{Log: s.Log, MemTableSize: s.StreamMemTableSize})
	if err != nil {
		return err
	}
	s.stream.Store(proc)
	s.g.Go(func() error { return proc.Run(s.ctx) })
	return nil
}

// StreamReady says why the stream is not ready: nil once the processor
// has restored its partitions, while the data directory (when watched)
// passes its check.
func (s *System) StreamReady() error {
	if s.DataDir != nil {
		if err := s.DataDir.Err(); err != nil {
			return err
		}
	}
	if p := s.stream.Load(); p != nil {
		return p.Ready()
	}
	return errors.New("starting")
}

// ServeHealth serves /metrics, /healthz and /readyz on addr for a part
// with no HTTP API of its own (httpapi.ServeHealth).
func (s *System) ServeHealth(addr, name string, ready func(context.Context) error) error {
	return httpapi.ServeHealth(s.ctx, s.g, addr, name, ready)
}

// forwardHUP turns each SIGHUP into a request on reload (one waiting at most)
// until ctx ends.
func forwardHUP(ctx context.Context, reload chan<- struct{}) {
	onHUP(ctx, func() {
		select {
		case reload <- struct{}{}:
		default:
		}
	})
}

func configErr(err error) error {
	if errs, ok := config.AsErrors(err); ok {
		return fmt.Errorf("invalid config:\n%s", errs.Error())
	}
	return err
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
					log.Error("reload: config not reloaded; the stream goes on with the one in force", "path", path, "err", configErr(err))
					continue
				}
				if errs := validate.Config(c, path, scorer.CheckModel); len(errs) > 0 {
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
