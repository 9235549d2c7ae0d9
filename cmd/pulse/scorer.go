package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/examples"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/loadtest"
	"github.com/pulse-rt/pulse/scorer"
	"golang.org/x/sync/errgroup"
)

// runScorer is `pulse scorer -config FILE`: the serving API over the
// configured online store. SIGHUP (or POST /v1/admin/reload) re-reads the
// config file and the model files.
func runScorer(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("scorer", flag.ExitOnError)
	path := fl.String("config", "pulse.yaml", "config file")
	fl.Parse(args)
	cfg, err := config.Load(*path)
	if err != nil {
		return configError(err)
	}
	tuneGC(scorerGCPercent)
	store, err := featurestore.Open(cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	g, ctx := errgroup.WithContext(ctx)
	if err := startScorer(ctx, g, cfg, store, scorer.WithConfigPath(*path)); err != nil {
		return err
	}
	return untilStopped(g)
}

// startScorer runs the scorer on cfg.Scorer.Listen in g: the prediction log
// producer, the live segment feed, the segment history rebuilt from Kafka,
// and model reload on SIGHUP. The caller owns store and closes it after g is
// done. extra options come last (for `pulse dev`: devScorerOptions).
func startScorer(ctx context.Context, g *errgroup.Group, cfg *config.Config, store featurestore.Store, extra ...scorer.Option) error {
	log := slog.Default()
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		return err
	}
	// Predictions do not need Kafka: when it is down the scorer serves
	// anyway, shedding log records and counting them.
	if *cfg.Kafka.CreateTopics {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := kafka.EnsureTopics(tctx, cl, cfg.Kafka)
		cancel()
		if err != nil {
			log.Warn("scorer: cannot create topics; predictions are served, their log waits for Kafka", "err", err)
		}
	}
	live := scorer.NewLive(cfg, scorer.LiveOptions{Log: log})
	// The dashboard's last hour survives a restart: rebuilt in the
	// background from the segments topic the live feed reads too.
	opts := append([]scorer.Option{scorer.WithPredictionLog(cl), scorer.WithLive(live), scorer.WithLogger(log), scorer.WithHistoryRebuild()}, extra...)
	srv, err := scorer.New(cfg, store, opts...)
	if err != nil {
		cl.Close()
		return err
	}
	g.Go(func() error {
		if err := live.Run(ctx); err != nil {
			log.Error("live segment feed stopped; predictions, lookups and the dashboard keep serving", "err", err)
		}
		return nil
	})
	g.Go(func() error {
		defer cl.Close()
		return srv.Run(ctx)
	})
	g.Go(func() error {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				log.Info("SIGHUP: reloading models")
				if _, err := srv.Reload(); err != nil {
					log.Error("reload incomplete", "err", err)
				}
			}
		}
	})
	return nil
}

// devScorerOptions pre-fill the dashboard with the first read key: only for
// `pulse dev`, which listens on 127.0.0.1.
func devScorerOptions(cfg *config.Config) []scorer.Option {
	for _, k := range cfg.Keys {
		if k.HasScope(config.ScopeRead) {
			return []scorer.Option{scorer.WithDashboardKey(k.Key)}
		}
	}
	return nil
}

func init() { loadtests["predict"] = loadtestPredict }

// loadtestPredict is `pulse loadtest predict`: open-loop predictions against
// a scorer (at -url, or with -embedded one started here over a store filled
// with -users users), with a bare fasthttp handler as the same-run baseline.
func loadtestPredict(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("loadtest predict", flag.ExitOnError)
	var o loadtest.PredictOptions
	fl.StringVar(&o.URL, "url", "http://127.0.0.1:8081", "scorer base URL")
	fl.StringVar(&o.Key, "key", "dev-read-key", "read key")
	fl.StringVar(&o.Model, "model", "purchase_propensity", "model to call")
	fl.IntVar(&o.Users, "users", 100_000, "distinct user ids (0..users-1), all in the store")
	rates := fl.String("rates", "2000,5000,10000", "open-loop rates, requests/s (comma-separated)")
	fl.DurationVar(&o.Duration, "duration", 10*time.Second, "length of each phase")
	fl.DurationVar(&o.Warmup, "warmup", time.Second, "warm-up before each phase (sent, not recorded)")
	fl.IntVar(&o.Connections, "connections", 32, "workers in the saturation phase")
	fl.IntVar(&o.Rounds, "rounds", 1, "split each phase into this many turns alternating the baseline and the scorer (steadier ratios on a busy machine)")
	embedded := fl.Bool("embedded", false, "start a scorer in this process over a store filled with -users users (the e-commerce example's model)")
	storeKind := fl.String("store", "pebble", "with -embedded: pebble (in a temp dir) or redis")
	redisAddr := fl.String("redis", "127.0.0.1:6379", "with -embedded -store redis: the Redis server")
	rowCache := fl.Int("row-cache-mb", 64, "with -embedded: the store's cache in MiB, Pebble's row cache or Redis's near cache (negative: off)")
	floor := fl.Bool("floor", false, "with -embedded -store redis: also measure, each phase, a bare handler that reads the request's user from Redis (no cache) before answering: the floor under a prediction that misses")
	rewrites := fl.Float64("rewrites", 0, "with -embedded: rewrite this many random users' vectors per second while the scorer serves, as the stream would (Redis: from another client)")
	predLog := fl.Bool("log", true, "with -embedded: log predictions to an in-process Kafka (kfake), as in production")
	cpuprofile := fl.String("cpuprofile", "", "write a CPU profile of this process to FILE")
	fl.Parse(args)
	for _, r := range strings.Split(*rates, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(r), 64)
		if err != nil || v <= 0 {
			return fmt.Errorf("-rates: %q is not a positive number", r)
		}
		o.Rates = append(o.Rates, v)
	}
	if *embedded {
		// The scorer runs in this process: give it `pulse scorer`'s
		// collector setting (the baseline handler shares it).
		tuneGC(scorerGCPercent)
		url, key, store, stop, err := embeddedScorer(ctx, embeddedOptions{
			kind: *storeKind, redisAddr: *redisAddr, users: o.Users, predLog: *predLog, rowCacheMB: *rowCache, rewrites: *rewrites,
		})
		if err != nil {
			return err
		}
		if c, ok := store.(featurestore.CacheReporter); ok && *rowCache >= 0 {
			o.StoreCache = func() (uint64, uint64) { s := c.CacheStats(); return s.Hits, s.Misses }
		}
		defer stop()
		o.URL, o.Key = url, key
		if *floor {
			if *storeKind != "redis" {
				return fmt.Errorf("-floor: needs -store redis")
			}
			f, closeFloor, err := redisFloor(*redisAddr)
			if err != nil {
				return err
			}
			defer closeFloor()
			o.Floor = f
		}
		if *storeKind == "redis" {
			read, closeFn := redisServerCPU(*redisAddr)
			defer closeFn()
			o.ServerCPU = read
		}
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	_, err := loadtest.Predict(ctx, o, os.Stdout)
	return err
}

// redisFloor reads one user's vector through the Redis store's read path
// with its cache off (AppendRaw: one MGET, shared by concurrent callers as
// the scorer's are), from the loadtest's store.
func redisFloor(addr string) (func(ctx context.Context, user uint64) error, func(), error) {
	st, err := loadtestRedis(addr, featurestore.RedisOptions{CacheSize: -1})
	if err != nil {
		return nil, nil, err
	}
	type scratch struct {
		buf []byte
		raw [][]byte
	}
	pool := sync.Pool{New: func() any { return new(scratch) }}
	read := func(ctx context.Context, user uint64) error {
		s := pool.Get().(*scratch)
		defer pool.Put(s)
		var id [20]byte
		ids := [1]string{string(strconv.AppendUint(id[:0], user, 10))}
		var err error
		s.buf, s.raw, err = st.AppendRaw(ctx, "user", ids[:], s.buf[:0], s.raw[:0])
		if err != nil {
			return err
		}
		if s.raw[0] == nil {
			return fmt.Errorf("user %d not in the store", user)
		}
		return nil
	}
	return read, func() { st.Close() }, nil
}

// loadtestRedis opens, at addr, the Redis store `loadtest predict
// -embedded` fills and reads: under a key prefix of its own, so a shared
// server's other keys are left alone.
func loadtestRedis(addr string, opts featurestore.RedisOptions) (*featurestore.Redis, error) {
	return featurestore.OpenRedis(config.Redis{Addr: addr, KeyPrefix: "pulse-loadtest:"}, opts)
}

// embeddedOptions are `pulse loadtest predict -embedded`'s flags.
type embeddedOptions struct {
	kind       string // store: pebble or redis
	redisAddr  string
	users      int
	predLog    bool
	rowCacheMB int
	rewrites   float64 // users rewritten per second while the scorer serves
}

// embeddedScorer fills a store with users and serves the example config's
// scorer over it on a free port; with eo.rewrites, it rewrites users
// meanwhile as the stream would (for Redis, from another client, as the
// stream is another process).
func embeddedScorer(ctx context.Context, eo embeddedOptions) (url, key string, store featurestore.Store, stop func(), err error) {
	tmp, err := os.MkdirTemp("", "pulse-loadtest-")
	if err != nil {
		return "", "", nil, nil, err
	}
	var closers []func()
	stop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		os.RemoveAll(tmp)
	}
	fail := func(err error) (string, string, featurestore.Store, func(), error) {
		stop()
		return "", "", nil, nil, err
	}
	data, err := examples.Ecommerce.ReadFile("ecommerce/pulse.yaml")
	if err != nil {
		return fail(err)
	}
	cfg, err := config.Parse(data, "examples/ecommerce/pulse.yaml (embedded)")
	if err != nil {
		return fail(err)
	}
	if err := unpack(tmp); err != nil {
		return fail(err)
	}
	cfg.Dir = tmp
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	switch eo.kind {
	case "pebble":
		store, err = featurestore.OpenPebble(filepath.Join(tmp, "store"), featurestore.PebbleOptions{Logger: quiet, RowCacheSize: int64(eo.rowCacheMB) << 20})
	case "redis":
		store, err = loadtestRedis(eo.redisAddr, featurestore.RedisOptions{TTL: time.Hour, Logger: quiet, CacheSize: int64(eo.rowCacheMB) << 20})
	default:
		err = fmt.Errorf("-store %q: want pebble or redis", eo.kind)
	}
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { store.Close() })
	fmt.Printf("filling the %s store with %d users...\n", eo.kind, eo.users)
	if err := fillStore(ctx, cfg, store, eo.users); err != nil {
		return fail(err)
	}
	if eo.rewrites > 0 {
		writer := store
		if eo.kind == "redis" {
			w, err := loadtestRedis(eo.redisAddr, featurestore.RedisOptions{TTL: time.Hour, CacheSize: -1})
			if err != nil {
				return fail(err)
			}
			closers = append(closers, func() { w.Close() })
			writer = w
		}
		wctx, cancel := context.WithCancel(ctx)
		var written atomic.Int64
		done := make(chan error, 1)
		go func() { done <- rewriteUsers(wctx, cfg, writer, eo.users, eo.rewrites, &written) }()
		closers = append(closers, func() {
			cancel()
			if err := <-done; err != nil {
				fmt.Printf("rewriting users: %v\n", err)
			}
			fmt.Printf("rewrote %d users' vectors over the run (-rewrites %g/s)\n", written.Load(), eo.rewrites)
		})
	}
	opts := []scorer.Option{scorer.WithLogger(quiet)}
	if eo.predLog {
		emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{})
		if err != nil {
			return fail(err)
		}
		closers = append(closers, emb.Close)
		cfg.Kafka.Brokers = emb.Addrs()
		cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
		if err != nil {
			return fail(err)
		}
		closers = append(closers, cl.Close)
		if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka); err != nil {
			return fail(err)
		}
		opts = append(opts, scorer.WithPredictionLog(cl))
	}
	srv, err := scorer.New(cfg, store, opts...)
	if err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	// The label tells the scorer's CPU from the load generator's and the
	// bare handler's in a -cpuprofile (pprof -tagfocus server=scorer).
	go pprof.Do(sctx, pprof.Labels("server", "scorer"), func(sctx context.Context) { _ = srv.Serve(sctx, ln); close(done) })
	closers = append(closers, func() { cancel(); <-done })
	for _, k := range cfg.Keys {
		if k.HasScope(config.ScopeRead) {
			key = k.Key
			break
		}
	}
	return "http://" + ln.Addr().String(), key, store, stop, nil
}

// fillStore writes users "0".."n-1" with the vectors the stream would
// compute for them (synthUser).
func fillStore(ctx context.Context, cfg *config.Config, store featurestore.Store, n int) error {
	set, err := aggregate.Compile(cfg.Features, aggregate.Options{})
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(1, 2))
	batch := make([]featurestore.Update, 0, 1000)
	now := time.Now()
	for i := 0; i < n; i++ {
		v, err := synthUser(set, strconv.Itoa(i), now, r)
		if err != nil {
			return err
		}
		batch = append(batch, featurestore.Update{Vector: v})
		if len(batch) == cap(batch) || i == n-1 {
			if err := store.Write(ctx, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

// synthUser is the vector the stream would compute at now for user id
// after a synthetic history drawn from r (views, cart adds, sessions,
// orders over the last 40 days), through the config's aggregate set, so
// every feature is there, as in production.
func synthUser(set *aggregate.Set, id string, now time.Time, r *rand.Rand) (featurestore.Vector, error) {
	st := set.NewState()
	var ev event.Event
	apply := func(name string, typ event.Type, ago time.Duration, props map[string]any) error {
		ev = event.Event{Type: typ, Event: name, UserID: id, MessageID: id + "/" + strconv.Itoa(r.IntN(1<<30)),
			Timestamp: now.Add(-ago), Properties: props}
		_, err := set.Apply(st, &ev)
		return err
	}
	ev = event.Event{Type: event.Identify, UserID: id, MessageID: id + "/identify",
		Timestamp: now.Add(-40 * 24 * time.Hour), Traits: map[string]any{"country": "FR"}}
	if _, err := set.Apply(st, &ev); err != nil {
		return featurestore.Vector{}, err
	}
	for range r.IntN(20) {
		ago := time.Duration(r.Int64N(int64(7 * 24 * time.Hour)))
		if err := apply("Session Started", event.Track, ago, nil); err != nil {
			return featurestore.Vector{}, err
		}
		for range r.IntN(6) {
			props := map[string]any{"product_id": "p-" + strconv.Itoa(r.IntN(500)), "category": "c-" + strconv.Itoa(r.IntN(20))}
			if err := apply("Product Viewed", event.Track, ago, props); err != nil {
				return featurestore.Vector{}, err
			}
		}
		if r.IntN(4) == 0 {
			if err := apply("Product Added", event.Track, ago, nil); err != nil {
				return featurestore.Vector{}, err
			}
		}
	}
	for range r.IntN(5) {
		ago := time.Duration(r.Int64N(int64(40 * 24 * time.Hour)))
		if err := apply("Order Completed", event.Track, ago, map[string]any{"revenue": 20 + 180*r.Float64()}); err != nil {
			return featurestore.Vector{}, err
		}
	}
	names := set.Names()
	vals := set.Values(st, now, nil)
	feats := make(map[string]any, len(names))
	for k, name := range names {
		feats[name] = vals[k]
	}
	return featurestore.Vector{Entity: "user", ID: id, UpdatedAt: now, Features: feats}, nil
}

// rewriteUsers rewrites rate random users' vectors per second into store
// until ctx ends, in a batch every 10 ms as the stream writes a poll's
// changes, counting them in *done.
func rewriteUsers(ctx context.Context, cfg *config.Config, store featurestore.Store, users int, rate float64, done *atomic.Int64) error {
	set, err := aggregate.Compile(cfg.Features, aggregate.Options{})
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(3, 4))
	const every = 10 * time.Millisecond
	t := time.NewTicker(every)
	defer t.Stop()
	start, written := time.Now(), 0
	var batch []featurestore.Update
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			batch = batch[:0]
			for due := int(rate * now.Sub(start).Seconds()); written < due; written++ {
				v, err := synthUser(set, strconv.Itoa(r.IntN(users)), now, r)
				if err != nil {
					return err
				}
				batch = append(batch, featurestore.Update{Vector: v})
			}
			if len(batch) == 0 {
				continue
			}
			if err := store.Write(ctx, batch); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			done.Add(int64(len(batch)))
		}
	}
}
