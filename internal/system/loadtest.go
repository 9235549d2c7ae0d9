package system

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/loadtest"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/stream"
)

// quiet is the services' logger while a load test prints its figures.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// onFreePorts makes the services listen on free ports of 127.0.0.1.
func onFreePorts(cfg *config.Config) {
	cfg.Ingest.Listen, cfg.Scorer.Listen = "127.0.0.1:0", "127.0.0.1:0"
}

// tempDataDir makes a data dir removed at Close.
func (s *System) tempDataDir() (string, error) {
	dir, err := os.MkdirTemp("", "pulse-loadtest-")
	if err != nil {
		return "", err
	}
	s.OnClose(func() { os.RemoveAll(dir) })
	return dir, nil
}

// PredictTargetOptions are `pulse loadtest predict -embedded`'s flags.
type PredictTargetOptions struct {
	Store      string // pebble (in a temp dir) or redis (loadtest.RedisStore)
	RedisAddr  string
	RedisSlots int     // the Redis store's ReadSlots (0: its default)
	Users      int     // users "0".."Users-1" written first (loadtest.FillStore)
	RowCacheMB int     // the store's cache: Pebble's row cache or Redis's near cache; negative: off
	Rewrites   float64 // users rewritten per second while the scorer serves (loadtest.RewriteUsers)
	// PredictionLog logs the predictions to an in-process Kafka, as in
	// production.
	PredictionLog bool
}

// Flags registers o's fields on `pulse loadtest predict`'s flags, for
// -embedded.
func (o *PredictTargetOptions) Flags(fl *flag.FlagSet) {
	fl.StringVar(&o.Store, "store", "pebble", "with -embedded: pebble (in a temp dir) or redis")
	fl.StringVar(&o.RedisAddr, "redis", "127.0.0.1:6379", "with -embedded -store redis: the Redis server")
	fl.IntVar(&o.RedisSlots, "redis-slots", 0, "with -embedded -store redis: vector reads (MGETs) out at once, for the scorer and the -floor alike (0: the store's default, 2)")
	fl.IntVar(&o.RowCacheMB, "row-cache-mb", 64, "with -embedded: the store's cache in MiB, Pebble's row cache or Redis's near cache (negative: off)")
	fl.Float64Var(&o.Rewrites, "rewrites", 0, "with -embedded: rewrite this many random users' vectors per second while the scorer serves, as the stream would (Redis: from another client)")
	fl.BoolVar(&o.PredictionLog, "log", true, "with -embedded: log predictions to an in-process Kafka (kfake), as in production")
}

// PredictTarget serves the example config's scorer on a free port over a
// store filled with o.Users users; with o.Rewrites, it rewrites users
// meanwhile as the stream would (for Redis, from another client, as the
// stream is another process). Its ScorerURL is the target, its Store the
// one filled; Close it after the run.
func PredictTarget(ctx context.Context, o PredictTargetOptions) (*System, error) {
	s := New(ctx, nil, quiet)
	if err := s.predictTarget(o); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *System) predictTarget(o PredictTargetOptions) error {
	dir, err := s.tempDataDir()
	if err != nil {
		return err
	}
	if s.Config, err = Example(dir); err != nil {
		return err
	}
	onFreePorts(s.Config)
	switch o.Store {
	case "pebble":
		s.Store, err = featurestore.OpenPebble(filepath.Join(dir, "store"), featurestore.PebbleOptions{Logger: quiet, RowCacheSize: int64(o.RowCacheMB) << 20})
	case "redis":
		s.Store, err = loadtest.RedisStore(o.RedisAddr, featurestore.RedisOptions{TTL: time.Hour, Logger: quiet, CacheSize: int64(o.RowCacheMB) << 20, ReadSlots: o.RedisSlots})
	default:
		err = fmt.Errorf("-store %q: want pebble or redis", o.Store)
	}
	if err != nil {
		return err
	}
	store := s.Store
	s.OnClose(func() { store.Close() })
	fmt.Printf("filling the %s store with %d users...\n", o.Store, o.Users)
	if err := loadtest.FillStore(s.ctx, s.Config, s.Store, o.Users); err != nil {
		return err
	}
	if o.Rewrites > 0 {
		if err := s.rewriteUsers(o); err != nil {
			return err
		}
	}
	if o.PredictionLog {
		if err := s.StartKafka(kafka.EmbeddedOptions{}); err != nil {
			return err
		}
	}
	return s.StartScorer(ScorerOptions{PredictionLog: o.PredictionLog})
}

// rewriteUsers runs loadtest.RewriteUsers until Close, and then says how
// many vectors it wrote.
func (s *System) rewriteUsers(o PredictTargetOptions) error {
	writer := s.Store
	if o.Store == "redis" {
		w, err := loadtest.RedisStore(o.RedisAddr, featurestore.RedisOptions{TTL: time.Hour, CacheSize: -1})
		if err != nil {
			return err
		}
		s.OnClose(func() { w.Close() })
		writer = w
	}
	var written atomic.Int64
	done := make(chan error, 1)
	go func() { done <- loadtest.RewriteUsers(s.ctx, s.Config, writer, o.Users, o.Rewrites, &written) }()
	s.OnClose(func() {
		if err := <-done; err != nil {
			fmt.Printf("rewriting users: %v\n", err)
		}
		fmt.Printf("rewrote %d users' vectors over the run (-rewrites %g/s)\n", written.Load(), o.Rewrites)
	})
	return nil
}

// IngestTarget runs an ingest server on a free port in front of brokers,
// or of an embedded Kafka started here when brokers is empty, with the
// write key dev-write-key (`loadtest ingest -embedded` and -in-process).
// Its IngestURL is the target and its Config.Kafka.Brokers the brokers;
// Close it after the run.
func IngestTarget(ctx context.Context, brokers []string) (*System, error) {
	cfg, err := config.Parse([]byte("keys:\n  - name: load\n    key: dev-write-key\n    scopes: [write]\n"), "loadtest")
	if err != nil {
		return nil, err
	}
	onFreePorts(cfg)
	cfg.Kafka.Brokers = brokers
	s := New(ctx, cfg, quiet)
	if len(brokers) == 0 {
		err = s.StartKafka(kafka.EmbeddedOptions{})
	}
	if err == nil {
		err = s.StartIngest()
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// EndToEnd starts every service of `pulse dev` that `loadtest freshness`
// and `loadtest segments` cross, on cfg plus the probes
// (loadtest.AddProbes), on free ports with a data dir of its own: an
// embedded Kafka, ingest, the stream processor writing through the
// returned WriteWatch, a Pebble online store and the scorer with its live
// feed and identity table; and waits until they are ready. A nil log is
// quiet.
func EndToEnd(ctx context.Context, cfg *config.Config, log *slog.Logger) (*System, *loadtest.WriteWatch, error) {
	return EndToEndOn(ctx, cfg, log, nil)
}

// EndToEndOn is EndToEnd on the Kafka at brokers instead of an embedded
// one (nil: embedded), with topics and a stream group of the run's own
// (Topics.Named), so that runs on one broker never read each other's
// records or offsets; Close deletes them.
func EndToEndOn(ctx context.Context, cfg *config.Config, log *slog.Logger, brokers []string) (*System, *loadtest.WriteWatch, error) {
	if log == nil {
		log = quiet
	}
	if brokers != nil {
		cfg.Kafka.Brokers = brokers
		run := "pulse-lt-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		cfg.Kafka.Topics.Named(run)
		cfg.Stream.Group = run
	}
	s := New(ctx, cfg, log)
	watch, err := s.endToEnd(brokers == nil)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, watch, nil
}

// dropRunTopics deletes, on a real broker, the topics and the stream
// group EndToEndOn named for the run: nothing of it stays on the cluster.
// A failure is logged, not returned: the measurement is done.
func (s *System) dropRunTopics() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kafka.NewClient(s.Config.Kafka)
	if err != nil {
		s.Log.Warn("loadtest: cannot drop the run's topics", "err", err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var names []string
	for _, t := range kafka.Topics(s.Config.Kafka) {
		names = append(names, t.Name)
	}
	if _, err := adm.DeleteGroups(ctx, s.Config.Stream.Group); err != nil {
		s.Log.Warn("loadtest: cannot drop the run's stream group", "group", s.Config.Stream.Group, "err", err)
	}
	if _, err := adm.DeleteTopics(ctx, names...); err != nil {
		s.Log.Warn("loadtest: cannot drop the run's topics", "err", err)
	}
}

func (s *System) endToEnd(embedded bool) (*loadtest.WriteWatch, error) {
	if err := loadtest.AddProbes(s.Config); err != nil {
		return nil, err
	}
	dir, err := s.tempDataDir()
	if err != nil {
		return nil, err
	}
	s.Config.DataDir = dir
	onFreePorts(s.Config)
	if embedded {
		if err := s.StartKafka(kafka.EmbeddedOptions{Partitions: s.Config.Kafka.Partitions}); err != nil {
			return nil, err
		}
	} else {
		// Registered first, so it runs last: after every part stopped.
		s.OnClose(func() { s.dropRunTopics() })
	}
	store, err := featurestore.OpenPebble(filepath.Join(dir, "store"), featurestore.PebbleOptions{Logger: s.Log, Sync: true}) // as featurestore.Open
	if err != nil {
		return nil, err
	}
	s.Store = store
	s.OnClose(func() { store.Close() })
	watch := loadtest.NewWriteWatch(store)
	if err := s.StartIngest(); err != nil {
		return nil, err
	}
	if err := s.StartStream(watch, ""); err != nil {
		return nil, err
	}
	if err := s.StartScorer(ScorerOptions{Live: &scorer.LiveOptions{Backfill: -1}, Profiles: true}); err != nil {
		return nil, err
	}
	return watch, s.WaitReady(time.Minute)
}

// PeerStream runs Pulse's stream on cfg, writing to the store cfg names,
// until ctx ends: the Pulse side of `pulse loadtest peer -in-process`
// (loadtest.PeerOptions.RunPulse).
func PeerStream(ctx context.Context, cfg *config.Config) error {
	store, err := featurestore.OpenWriter(cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	proc, err := stream.New(cfg, store, stream.Options{Log: quiet})
	if err != nil {
		return err
	}
	return proc.Run(ctx)
}
