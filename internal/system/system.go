// Package system is the in-process Pulse that `pulse dev` and the load
// tests run: one builder, System, that starts the parts each one needs
// (embedded Kafka, the online store, ingest, the stream processor, the
// scorer with its live feed, webhooks, the destinations, the history
// writer) in one process, runs them in one group, and stops them in order.
// Dev is `pulse dev`; the one-service commands (`pulse ingest`, `stream`,
// `scorer`, `history`, `webhooks`, `destinations`) start their part
// through it too, so every command wires a service the same way.
//
// It is wiring, as cmd/pulse is, and sits above the services: a service
// never imports another, so the load-test systems that need a service
// (PredictTarget, the embedded scorer of `loadtest predict`; EndToEnd, the
// system `loadtest freshness` and `segments` cross; IngestTarget, the
// in-process ingest of `loadtest ingest`) are built here, in loadtest.go,
// while the load generators and the measuring code that need no service
// (FillStore, RewriteUsers, the Redis floor, the probes, WriteWatch) live
// in package loadtest, which imports no service. Only cmd/pulse imports
// this package.
package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/destination"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/importer"
	"github.com/pulse-rt/pulse/ingest"
	"github.com/pulse-rt/pulse/internal/diskfault"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/stream"
	"github.com/pulse-rt/pulse/suppression"
	"github.com/pulse-rt/pulse/webhook"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
)

// System is a set of Pulse's parts running in this process on one config.
// Create it with New, start parts with its Start methods (in the order of
// the flow: Kafka, store, ingest, stream, scorer...), then Wait for it, or
// Close it. A Start method that fails leaves the parts started before it
// running: Close stops them.
type System struct {
	Config *config.Config
	Log    *slog.Logger
	// Store is the online store the stream writes and the scorer reads:
	// set by OpenStore, or by the caller (who then closes it, or hands that
	// to OnClose).
	Store featurestore.Store

	Ingest *ingest.Server    // set by StartIngest
	Stream *stream.Processor // set by StartStream
	Scorer *scorer.Server    // set by StartScorer
	Live   *scorer.Live      // set by StartScorer with ScorerOptions.Live
	Kafka  *kafka.Embedded   // set by StartKafka
	// DataDir checks the config's data directory every second: set by
	// WatchDataDir, which pulse dev and pulse stream call first.
	DataDir *diskfault.Watcher
	// Destinations are the config's destinations, set by StartDestinations
	// when the config has any.
	Destinations *destination.Service
	// StreamMemTableSize, set before StartStream, is the stream's
	// stream.Options.MemTableSize (0: its default).
	StreamMemTableSize int

	// events reads the history for the scorer's profiles, once a
	// ClickHouse is known (StartScorer or StartHistory).
	events historyEvents

	ingestAddr, scorerAddr, destinationsAddr string
	stream                                   atomic.Pointer[stream.Processor] // the one running, once StartStream made it

	ctx     context.Context // the group's: ends when the parent does, at Close, or when a part fails
	cancel  context.CancelFunc
	g       *errgroup.Group
	closers []func() // run in reverse after every part stopped
	once    sync.Once
	err     error
}

// New returns a System with no part started. ctx ending stops every part.
// A nil log is slog.Default().
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) *System {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	return &System{Config: cfg, Log: log, ctx: gctx, cancel: cancel, g: g}
}

// Go runs f in the system's group (`pulse dev --demo`'s traffic): f's
// context ends when the system stops, and an error from f stops it.
func (s *System) Go(f func(ctx context.Context) error) { s.g.Go(func() error { return f(s.ctx) }) }

// follow runs run (a feed that follows a topic, or another part the
// others go on without) until the system stops; its error is logged as
// stopped says, and stops nothing else.
func (s *System) follow(run func(context.Context) error, stopped string) {
	s.g.Go(func() error {
		if err := run(s.ctx); err != nil {
			s.Log.Error(stopped, "err", err)
		}
		return nil
	})
}

// OnClose runs f once every part has stopped, before the functions given
// earlier (the reverse of the order given).
func (s *System) OnClose(f func()) { s.closers = append(s.closers, f) }

// Wait blocks until the parent context ends or a part fails, then stops
// every part and releases what they used. A clean stop (context.Canceled)
// is no error.
func (s *System) Wait() error {
	s.once.Do(func() {
		err := s.g.Wait()
		s.cancel()
		for i := len(s.closers) - 1; i >= 0; i-- {
			s.closers[i]()
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			s.err = err
		}
	})
	return s.err
}

// Close stops every part, waits for them and releases what they used.
func (s *System) Close() error {
	s.cancel()
	return s.Wait()
}

// WatchDataDir checks the config's data directory (creating it) every
// second until the system stops: while it fails (deleted, full,
// read-only), ingest started after this answers 503 and the stream is
// not ready, both saying why.
func (s *System) WatchDataDir() error {
	w, err := diskfault.NewWatcher(s.Config.DataDir, s.Log)
	if err != nil {
		return err
	}
	s.DataDir = w
	s.g.Go(func() error { w.Run(s.ctx, time.Second); return nil })
	return nil
}

// StartKafka starts the embedded Kafka (franz-go's kfake) and points the
// config's brokers at it.
func (s *System) StartKafka(o kafka.EmbeddedOptions) error {
	emb, err := kafka.StartEmbedded(o)
	if err != nil {
		return err
	}
	s.Kafka = emb
	s.OnClose(emb.Close)
	s.Config.Kafka.Brokers = emb.Addrs()
	s.Log.Info("embedded kafka up", "addr", strings.Join(emb.Addrs(), ","), "data", o.DataDir)
	return nil
}

// OpenStore opens the config's online store (featurestore.Open), closed
// after every part has stopped.
func (s *System) OpenStore() error {
	store, err := featurestore.Open(s.Config)
	if err != nil {
		return err
	}
	s.Store = store
	s.OnClose(func() { store.Close() })
	return nil
}

// producer is a Kafka producer on the config, closed after every part has
// stopped.
func (s *System) producer() (*kgo.Client, error) {
	cl, err := kafka.NewClient(s.Config.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		return nil, err
	}
	s.OnClose(cl.Close)
	return cl, nil
}

// serve runs serve on a listener on addr in the group, labelled for pprof
// (server=name: `pprof -tagfocus server=scorer` tells a server's CPU from
// a load generator's in the same process), and returns the address
// listened on (addr may say port 0).
func (s *System) serve(name, addr string, serve func(context.Context, net.Listener) error) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("cannot listen for %s: %w", name, err)
	}
	s.g.Go(func() error {
		var err error
		pprof.Do(s.ctx, pprof.Labels("server", name), func(ctx context.Context) { err = serve(ctx, ln) })
		return err
	})
	return ln.Addr().String(), nil
}

// StartIngest runs the tracking API on the config's ingest.listen, with a
// producer of its own, creating the topics first when the config says so.
func (s *System) StartIngest() error {
	cl, err := s.producer()
	if err != nil {
		return err
	}
	if *s.Config.Kafka.CreateTopics {
		if err := kafka.EnsureTopics(s.ctx, cl, s.Config.Kafka); err != nil {
			return err
		}
	}
	s.Ingest = ingest.New(s.Config, cl, s.Log)
	if s.Config.Identity.On() {
		// People deleted with suppression: their later events dropped.
		sup := ingest.NewSuppressions(s.Config, s.Log)
		s.Ingest.Suppress(sup)
		s.follow(sup.Run, "suppressions feed stopped; ingest drops only the ids it read")
	}
	if s.DataDir != nil && s.Kafka != nil {
		// The embedded Kafka keeps its log in the data directory: what
		// ingest acknowledged while it fails would be gone at restart.
		s.Ingest.HoldWhile(s.DataDir.Err)
	}
	s.ingestAddr, err = s.serve("ingest", s.Config.Ingest.Listen, s.Ingest.Serve)
	return err
}

// IngestURL is the base URL of the ingest StartIngest started.
func (s *System) IngestURL() string { return "http://" + s.ingestAddr }

// ScorerOptions say which of the scorer's Kafka-fed parts run.
type ScorerOptions struct {
	// PredictionLog sends every prediction to Kafka's predictions topic,
	// as in production. The scorer serves when Kafka is down: the topics
	// not created is a warning, and the log sheds records meanwhile.
	PredictionLog bool
	// Live, when set, serves the live segment feed read from Kafka (a
	// feed that stops is logged; everything else keeps serving).
	Live *scorer.LiveOptions
	// HistoryRebuild rebuilds the dashboard's last hour from the segments
	// topic in the background (scorer.WithHistoryRebuild).
	HistoryRebuild bool
	// Profiles serves GET /v1/profiles with the history's traits and
	// events (when ClickHouse is configured) and, with identity on,
	// resolves merged ids through the identity topic.
	Profiles bool
	// ReloadOnHUP reloads the models (and, given scorer.WithConfigPath,
	// the config) on SIGHUP.
	ReloadOnHUP bool
	// Imports serves the dashboard's Import page API (importer.Web),
	// producing to the events topic.
	Imports bool
	// Options come last (WithConfigPath, WithDashboardKey...).
	Options []scorer.Option
}

// Serving is the scorer as `pulse scorer` and `pulse dev` run it: the
// prediction log, the live segment feed, the dashboard's last hour
// rebuilt from Kafka (so it survives a restart), and model reload on
// SIGHUP; extra options come last.
func Serving(extra ...scorer.Option) ScorerOptions {
	return ScorerOptions{PredictionLog: true, Live: &scorer.LiveOptions{}, HistoryRebuild: true, Profiles: true, ReloadOnHUP: true, Imports: true, Options: extra}
}

// StartScorer runs the scorer over s.Store on the config's scorer.listen.
func (s *System) StartScorer(o ScorerOptions) error {
	opts := []scorer.Option{scorer.WithLogger(s.Log)}
	if o.PredictionLog {
		cl, err := s.producer()
		if err != nil {
			return err
		}
		if *s.Config.Kafka.CreateTopics {
			ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
			err := kafka.EnsureTopics(ctx, cl, s.Config.Kafka)
			cancel()
			if err != nil {
				s.Log.Warn("scorer: cannot create topics; predictions are served, their log waits for Kafka", "err", err)
			}
		}
		opts = append(opts, scorer.WithPredictionLog(cl))
	}
	if o.Live != nil {
		lo := *o.Live
		lo.Log = s.Log
		s.Live = scorer.NewLive(s.Config, lo)
		opts = append(opts, scorer.WithLive(s.Live))
		if s.Config.RFM != nil {
			view := scorer.NewRFMView(s.Config, s.Log)
			opts = append(opts, scorer.WithRFM(view))
			s.follow(view.Run, "rfm view stopped; GET /v1/rfm answers what it read")
		}
	}
	if o.HistoryRebuild {
		opts = append(opts, scorer.WithHistoryRebuild())
	}
	if o.Profiles {
		// Profiles resolve ids through the identity table (when identity
		// is on) and read traits and events from the history.
		if err := s.openHistoryReader(); err != nil {
			return err
		}
		opts = append(opts, scorer.WithHistory(&s.events))
		if s.Config.Identity.On() {
			ids := scorer.NewIdentities(s.Config, s.Log)
			opts = append(opts, scorer.WithIdentities(ids))
			cl, err := s.producer()
			if err != nil {
				return err
			}
			opts = append(opts, scorer.WithDeletions(cl))
			s.follow(ids.Run, "identity table feed stopped; profiles list no new identifiers")
			if s.Config.Kafka.Topics.Suppressions != "" {
				sup := suppression.New(s.Config, s.Log, nil)
				opts = append(opts, scorer.WithSuppressionList(sup))
				s.follow(sup.Run, "suppressions feed stopped; GET /v1/suppressions answers what it read")
			}
			if s.Config.Kafka.Topics.Deletions != "" {
				dels := scorer.NewDeletions(s.Config, s.Log)
				opts = append(opts, scorer.WithDeletionStatus(dels))
				s.follow(dels.Run, "deletions feed stopped; GET /v1/deletions answers what it read")
			}
		}
	}
	if o.Imports {
		cl, err := s.producer()
		if err != nil {
			return err
		}
		tp := s.Config.Kafka.Topics
		web, err := importer.NewWeb(s.ctx, cl, importer.Options{Events: tp.Events, Invalid: tp.Invalid})
		if err != nil {
			return err
		}
		opts = append(opts, scorer.WithImport(web))
	}
	if s.DataDir != nil {
		opts = append(opts, scorer.WithReadyWhile(s.DataDir.Err))
	}
	srv, err := scorer.New(s.Config, s.Store, append(opts, o.Options...)...)
	if err != nil {
		return err
	}
	s.Scorer = srv
	if s.Live != nil {
		live := s.Live
		s.follow(live.Run, "live segment feed stopped; predictions, lookups and the dashboard keep serving")
	}
	if o.ReloadOnHUP {
		s.g.Go(func() error { reloadOnHUP(s.ctx, srv, s.Log); return nil })
	}
	s.scorerAddr, err = s.serve("scorer", s.Config.Scorer.Listen, srv.Serve)
	return err
}

// ScorerURL is the base URL of the scorer StartScorer started.
func (s *System) ScorerURL() string { return "http://" + s.scorerAddr }

func reloadOnHUP(ctx context.Context, srv *scorer.Server, log *slog.Logger) {
	onHUP(ctx, func() {
		log.Info("SIGHUP: reloading models")
		if _, err := srv.Reload(); err != nil {
			log.Error("reload incomplete", "err", err)
		}
	})
}

// onHUP calls f on each SIGHUP until ctx ends.
func onHUP(ctx context.Context, f func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			f()
		}
	}
}

// StartWebhooks delivers segment webhooks, when any segment has one.
func (s *System) StartWebhooks() {
	svc := webhook.New(s.Config, webhook.Options{Log: s.Log})
	if svc.Enabled() {
		s.g.Go(func() error { return svc.Run(s.ctx) })
	}
}

// StartDestinations runs the config's destinations (one runner each),
// and, with listen, their admin API (pause, resume), /metrics, /healthz
// and /readyz on it. With no destination configured it logs so and
// starts nothing.
func (s *System) StartDestinations(listen string) error {
	svc, err := destination.New(s.Config, destination.Options{Log: s.Log}, nil)
	if err != nil {
		return err
	}
	if !svc.Enabled() {
		s.Log.Info("no destinations configured")
		return nil
	}
	s.Destinations = svc
	s.g.Go(func() error { return svc.Run(s.ctx) })
	if listen != "" {
		s.destinationsAddr, err = s.serve("destinations", listen, svc.Serve)
	}
	return err
}

// DestinationsURL is the base URL of the admin API StartDestinations
// started ("" when none).
func (s *System) DestinationsURL() string {
	if s.destinationsAddr == "" {
		return ""
	}
	return "http://" + s.destinationsAddr
}

// LocalClickHouse are the ports of the clickhouse-server StartHistory
// starts when the config names no ClickHouse.
type LocalClickHouse struct{ TCP, HTTP int }

// StartHistory copies the topics into the config's ClickHouse; with local
// and no ClickHouse configured, into a clickhouse-server started here with
// its data under the data dir, when one is installed. With neither, the
// history is off, as a log line says.
func (s *System) StartHistory(local *LocalClickHouse) error {
	if s.Config.ClickHouse.Addr == "" && local != nil {
		dir := filepath.Join(s.Config.DataDir, "clickhouse")
		ch, err := history.StartLocal(s.ctx, dir, local.TCP, local.HTTP)
		switch {
		case errors.Is(err, history.ErrNoLocalServer):
			s.Log.Info("history is off: clickhouse-server is not installed (apt-get install clickhouse-server, then restart pulse dev)")
		case err != nil:
			s.Log.Warn("history is off: cannot start a local ClickHouse", "err", err)
		default:
			s.OnClose(ch.Stop)
			s.Config.ClickHouse.Addr = ch.Addr
			s.Log.Info("local ClickHouse up", "native", ch.Addr, "http", ch.HTTPAddr, "data", dir)
		}
	}
	if s.Config.ClickHouse.Addr == "" {
		return nil
	}
	w, err := history.NewWriter(s.Config, history.WriterOptions{}, s.Log)
	if err != nil {
		return err
	}
	s.g.Go(func() error { return w.Run(s.ctx) })
	return s.openHistoryReader()
}

// WaitReady waits, up to timeout, until the stream started has restored
// its partitions and the live feed has caught up.
func (s *System) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var err error
		if s.stream.Load() != nil {
			err = s.StreamReady()
		}
		if err == nil && (s.Live == nil || s.Live.Ready()) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("services not ready after %s: stream: %v", timeout, err)
		}
		select {
		case <-s.ctx.Done():
			return fmt.Errorf("a service stopped while starting: %w", s.Close())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
