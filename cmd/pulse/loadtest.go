package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/system"
	"github.com/pulse-rt/pulse/loadtest"
)

// loadtests are `pulse loadtest`'s subcommands by name.
var loadtests = map[string]func(context.Context, []string) error{
	"ingest":    loadtestIngest,
	"floor":     loadtestFloor,
	"predict":   loadtestPredict,
	"freshness": loadtestFreshness,
	"identity":  loadtestIdentity,
	"segments":  loadtestSegments,
	"soak":      loadtestSoak,
	"peer":      loadtestPeer,
}

func runLoadtest(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: pulse loadtest " + strings.Join(slices.Sorted(maps.Keys(loadtests)), "|") + " [flags]")
	}
	run := loadtests[args[0]]
	if run == nil {
		return fmt.Errorf("unknown loadtest %q (want one of %s)", args[0], strings.Join(slices.Sorted(maps.Keys(loadtests)), ", "))
	}
	return run(ctx, args[1:])
}

func loadtestIngest(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("loadtest ingest", flag.ExitOnError)
	var o loadtest.IngestOptions
	o.Flags(fl)
	brokers := fl.String("brokers", "127.0.0.1:9092", "brokers for the raw-produce baseline (comma-separated)")
	embedded := fl.Bool("embedded", false, "start an in-process Kafka (kfake) and ingest server to measure, instead of -url/-brokers")
	inProcess := fl.Bool("in-process", false, "start an ingest server in this process in front of -brokers, instead of -url (to profile ingest with -cpuprofile)")
	cpuprofile := fl.String("cpuprofile", "", "write a CPU profile of this process to FILE")
	cpuOf := fl.String("cpu-of", "", "also report the CPU per event of these processes: NAME=PID,... (e.g. ingest=123,broker=456; Linux)")
	fl.Parse(args)
	if *cpuOf != "" {
		for _, kv := range strings.Split(*cpuOf, ",") {
			name, pid, ok := strings.Cut(kv, "=")
			n, err := strconv.Atoi(pid)
			if !ok || name == "" || err != nil {
				return fmt.Errorf("-cpu-of: %q is not NAME=PID", kv)
			}
			o.Processes = append(o.Processes, loadtest.Process{Name: name, PID: n})
		}
	}
	stopProfile, err := loadtest.StartCPUProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stopProfile()
	o.Brokers = strings.Split(*brokers, ",")
	if *embedded || *inProcess {
		var brokers []string
		if !*embedded {
			brokers = o.Brokers
		}
		sys, err := system.IngestTarget(ctx, brokers)
		if err != nil {
			return err
		}
		defer sys.Close()
		o.URL, o.Brokers = sys.IngestURL(), sys.Config.Kafka.Brokers
	}
	_, err = loadtest.Ingest(ctx, o, os.Stdout)
	return err
}

// loadtestFloor serves the floor of `loadtest ingest -floor` in a process
// of its own, for `loadtest ingest -floor -floor-url`.
func loadtestFloor(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("loadtest floor", flag.ExitOnError)
	var o loadtest.IngestOptions
	listen := fl.String("listen", "127.0.0.1:18082", "address to serve /v1/batch on")
	brokers := fl.String("brokers", "127.0.0.1:9092", "brokers (comma-separated)")
	fl.IntVar(&o.Batch, "batch", 100, "events per request, as the load test sends them")
	fl.IntVar(&o.Users, "users", 100_000, "distinct user ids, as the load test uses them")
	fl.Parse(args)
	o.Brokers = strings.Split(*brokers, ",")
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Printf("floor serving http://%s/v1/batch\n", ln.Addr())
	return loadtest.ServeIngestFloor(ctx, o, ln)
}

// loadtestPredict is `pulse loadtest predict`: open-loop predictions against
// a scorer (at -url, or with -embedded one started here over a store filled
// with -users users), with a bare fasthttp handler as the same-run baseline.
func loadtestPredict(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("loadtest predict", flag.ExitOnError)
	var o loadtest.PredictOptions
	o.Flags(fl)
	var t system.PredictTargetOptions
	t.Flags(fl)
	embedded := fl.Bool("embedded", false, "start a scorer in this process over a store filled with -users users (the e-commerce example's model)")
	floor := fl.Bool("floor", false, "with -embedded -store redis: also measure, each phase, a bare handler that reads the request's user from Redis (no cache) before answering: the floor under a prediction that misses")
	cpuprofile := fl.String("cpuprofile", "", "write a CPU profile of this process to FILE")
	fl.StringVar(&o.Trace, "trace", "", "write an execution trace of the scorer's side of each open-loop phase to FILE.<rate> (go tool trace -pprof=sched|net|sync: where its requests waited)")
	fl.Parse(args)
	if *embedded {
		// The scorer runs in this process: give it `pulse scorer`'s
		// collector setting (the baseline handler shares it).
		system.TuneGC(system.ScorerGCPercent)
		t.Users = o.Users
		sys, err := system.PredictTarget(ctx, t)
		if err != nil {
			return err
		}
		defer sys.Close()
		if c, ok := sys.Store.(featurestore.CacheReporter); ok && t.RowCacheMB >= 0 {
			o.StoreCache = func() (uint64, uint64) { s := c.CacheStats(); return s.Hits, s.Misses }
		}
		o.URL, o.Key = sys.ScorerURL(), sys.Config.KeyWithScope(config.ScopeRead)
		if *floor {
			if t.Store != "redis" {
				return fmt.Errorf("-floor: needs -store redis")
			}
			f, closeFloor, err := loadtest.RedisFloor(t.RedisAddr, t.RedisSlots)
			if err != nil {
				return err
			}
			defer closeFloor()
			o.Floor = f
		}
		if t.Store == "redis" {
			read, closeFn := loadtest.RedisServerCPU(t.RedisAddr)
			defer closeFn()
			o.ServerCPU = read
		}
	}
	stopProfile, err := loadtest.StartCPUProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stopProfile()
	_, err = loadtest.Predict(ctx, o, os.Stdout)
	return err
}

// loadtestE2E is what `loadtest freshness` and `loadtest segments` share:
// the flags besides their own (flags), and the run through every service
// of `pulse dev` in this process (system.EndToEnd), measured by measure,
// then the stream's own timings and the load.
func loadtestE2E(ctx context.Context, name string, args []string, flags func(*flag.FlagSet), measure func(*system.System, *loadtest.WriteWatch) error) error {
	fl := newCommand("loadtest "+name, "")
	fl.Lookup("config").Usage = "config to measure (default: the embedded e-commerce example), plus the probe features"
	verbose := fl.Bool("v", false, "show the services' logs")
	cpuprofile := fl.String("cpuprofile", "", "write a CPU profile of this process to FILE")
	traceFile := fl.String("trace", "", "write an execution trace of the measured run to FILE (tools/traceslow -region txn FILE: where the stream's Kafka transactions waited)")
	brokers := fl.String("brokers", "", "measure on this Kafka (host:port[,...]) instead of the embedded one; the run makes topics and a stream group of its own, pulse-lt-<run>.*, and deletes them at its end")
	flags(fl.FlagSet)
	cfg, err := fl.load(args)
	if err != nil {
		return err
	}
	var log *slog.Logger
	if *verbose {
		log = slog.Default()
	}
	var on []string
	kafkaDesc := "kfake"
	if *brokers != "" {
		on = strings.Split(*brokers, ",")
		kafkaDesc = "Kafka at " + *brokers
	}
	sys, watch, err := system.EndToEndOn(ctx, cfg, log, on)
	if err != nil {
		return err
	}
	defer sys.Close()
	if on != nil {
		kafkaDesc += " (topics " + strings.TrimSuffix(cfg.Kafka.Topics.Events, ".events") + ".*)"
	}
	stopProfile, err := loadtest.StartCPUProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stopProfile()
	stopTrace, err := loadtest.StartTrace(*traceFile)
	if err != nil {
		return err
	}
	defer stopTrace()
	fmt.Printf("in-process: %s, ingest %s, stream (%d partitions, timer %s), Pebble store, scorer %s; GOMAXPROCS %d\n",
		kafkaDesc, sys.IngestURL(), cfg.Kafka.Partitions, cfg.Stream.TimerInterval.D(), sys.ScorerURL(), runtime.GOMAXPROCS(0))
	err = measure(sys, watch)
	loadtest.PrintStreamStats(os.Stdout)
	loadtest.PrintLoad(os.Stdout)
	return err
}

// loadtestFreshness is `pulse loadtest freshness`: event accepted by
// ingest (HTTP 200) -> new value readable from the online store, through
// every service of `pulse dev` in this process.
func loadtestFreshness(ctx context.Context, args []string) error {
	var o loadtest.FreshnessOptions
	var poll time.Duration
	return loadtestE2E(ctx, "freshness", args, func(fl *flag.FlagSet) {
		o.Flags(fl)
		fl.DurationVar(&poll, "poll", 0, "poll the store for each probe's vector this often instead of hooking the store's writes (e.g. 1ms)")
	}, func(sys *system.System, watch *loadtest.WriteWatch) error {
		o.URL, o.WriteKey, o.Poll = sys.IngestURL(), sys.Config.KeyWithScope(config.ScopeWrite), poll
		if poll == 0 {
			o.WrittenAt = watch.WrittenAt
		}
		o.Lookup = func(ctx context.Context, user string) (bool, error) {
			_, err := sys.Store.Get(ctx, "user", user)
			if errors.Is(err, featurestore.ErrNotFound) {
				return false, nil
			}
			return err == nil, err
		}
		_, err := loadtest.Freshness(ctx, o, os.Stdout)
		return err
	})
}

// loadtestIdentity is `pulse loadtest identity`: an identify accepted by
// ingest (HTTP 200) -> the scorer answers the anonymous id as the merged
// person, through every service of `pulse dev` in this process.
func loadtestIdentity(ctx context.Context, args []string) error {
	var o loadtest.IdentityOptions
	return loadtestE2E(ctx, "identity", args, o.Flags, func(sys *system.System, _ *loadtest.WriteWatch) error {
		o.URL, o.WriteKey, o.ScorerURL = sys.IngestURL(), sys.Config.KeyWithScope(config.ScopeWrite), sys.ScorerURL()
		o.ReadKey = sys.Config.KeyWithScope(config.ScopeRead)
		rep, err := loadtest.Identity(ctx, o, os.Stdout)
		if err == nil && rep.Merged.TotalCount() == 0 {
			err = fmt.Errorf("no merge was seen: %v", rep.FirstErr)
		}
		return err
	})
}

// loadtestSegments is `pulse loadtest segments`: event accepted by ingest
// (HTTP 200) -> enter record on the scorer's SSE feed, and the lateness of
// window-expiry exits, through every service of `pulse dev` in this process.
func loadtestSegments(ctx context.Context, args []string) error {
	var o loadtest.SegmentsOptions
	var expire bool
	return loadtestE2E(ctx, "segments", args, func(fl *flag.FlagSet) {
		o.Flags(fl)
		fl.BoolVar(&expire, "expiry", true, "also measure the lateness of the 2s-window exits")
	}, func(sys *system.System, _ *loadtest.WriteWatch) error {
		o.URL, o.WriteKey, o.ScorerURL = sys.IngestURL(), sys.Config.KeyWithScope(config.ScopeWrite), sys.ScorerURL()
		o.ReadKey, o.Enter = sys.Config.KeyWithScope(config.ScopeRead), loadtest.ProbeEnter
		if expire {
			o.Expire = loadtest.ProbeExpire
		}
		_, err := loadtest.Segments(ctx, o, os.Stdout)
		return err
	})
}

// loadtestSoak is `pulse loadtest soak`: a steady mixed load through
// every service of `pulse dev` in this process for -duration, sampling
// the process's goroutines, live heap and open files; it fails when they
// grow (loadtest.Flat) or a request failed.
func loadtestSoak(ctx context.Context, args []string) error {
	var o loadtest.SoakOptions
	return loadtestE2E(ctx, "soak", args, func(fl *flag.FlagSet) {
		fl.DurationVar(&o.Duration, "duration", 30*time.Second, "how long to run (the resources are compared between its first and last thirds)")
		fl.Float64Var(&o.EventsPerSecond, "events", 500, "events per second posted to ingest, in batches of 10")
		fl.Float64Var(&o.PredictsPerSecond, "predicts", 200, "predictions per second, one user each")
		fl.IntVar(&o.SSEClients, "sse", 20, "live-feed clients kept connected, each leaving after 0.1-1 s for a new one")
		fl.DurationVar(&o.SampleEvery, "sample", time.Second, "sample the process this often")
	}, func(sys *system.System, _ *loadtest.WriteWatch) error {
		o.IngestURL, o.ScorerURL = sys.IngestURL(), sys.ScorerURL()
		o.WriteKey, o.ReadKey = sys.Config.KeyWithScope(config.ScopeWrite), sys.Config.KeyWithScope(config.ScopeRead)
		if len(sys.Config.Models) > 0 {
			o.Model = sys.Config.Models[0].Name
		}
		o.Out = os.Stdout
		rep, err := loadtest.Soak(ctx, o)
		if err != nil {
			return err
		}
		fmt.Printf("soak %s: %d events, %d predictions, %d live-feed sessions, %d errors\n", o.Duration, rep.Events, rep.Predictions, rep.SSESessions, rep.Errors)
		if rep.FirstErr != nil {
			return fmt.Errorf("%d requests failed, the first: %w", rep.Errors, rep.FirstErr)
		}
		// The embedded Kafka (kfake) keeps every record in memory, so
		// the live heap grows with the load whatever Pulse does: it is
		// shown, and judged by goroutines and open files.
		if err := loadtest.Flat(rep.Samples, 50, false); err != nil {
			return err
		}
		if n := len(rep.Samples); n > 1 && rep.Events > 0 {
			grew := float64(rep.Samples[n-1].HeapBytes) - float64(rep.Samples[0].HeapBytes)
			fmt.Printf("live heap grew %.1f MB, %.0f bytes an event: the embedded Kafka's log, in memory\n", grew/(1<<20), grew/float64(rep.Events))
		}
		fmt.Println("flat: goroutines and open files did not grow")
		return nil
	})
}

// loadtestPeer is `pulse loadtest peer`: the same events through Pulse's
// stream and through the Kafka Streams peer (loadtest/peers/kstreams), in
// turns, on a real broker and Redis: throughput, CPU per event and
// freshness side by side, and a check that both computed the same
// features.
func loadtestPeer(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("loadtest peer", flag.ExitOnError)
	var o loadtest.PeerOptions
	var brokers string
	o.Flags(fl, &brokers)
	verbose := fl.Bool("v", false, "show the output of the peer and of pulse stream")
	inProcess := fl.Bool("in-process", false, "run Pulse's stream in this process instead of as `pulse stream` (a process of its own, as the peer is)")
	fl.Parse(args)
	o.Brokers = strings.Split(brokers, ",")
	if !*inProcess {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.PulseCommand = []string{exe, "stream"}
	} else {
		o.RunPulse = system.PeerStream
	}
	if *verbose {
		o.Log = os.Stderr
	}
	_, err := loadtest.Peer(ctx, o, os.Stdout)
	if *inProcess {
		loadtest.PrintStreamStats(os.Stdout)
	}
	loadtest.PrintLoad(os.Stdout)
	return err
}
