package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/loadtest"
)

func runLoadtest(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: pulse loadtest ingest|predict|freshness|segments|floor [flags]")
	}
	switch args[0] {
	case "ingest":
		return loadtestIngest(ctx, args[1:])
	case "floor":
		return loadtestFloor(ctx, args[1:])
	}
	if fn := loadtests[args[0]]; fn != nil {
		return fn(ctx, args[1:])
	}
	return fmt.Errorf("unknown loadtest %q (want ingest, predict, freshness, segments or floor)", args[0])
}

// loadtests holds the other targets, registered by their files.
var loadtests = map[string]func(context.Context, []string) error{}

func loadtestIngest(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("loadtest ingest", flag.ExitOnError)
	var o loadtest.IngestOptions
	fl.StringVar(&o.URL, "url", "http://127.0.0.1:8080", "ingest base URL")
	fl.StringVar(&o.WriteKey, "key", "dev-write-key", "write key")
	brokers := fl.String("brokers", "127.0.0.1:9092", "brokers for the raw-produce baseline (comma-separated)")
	fl.IntVar(&o.Batch, "batch", 100, "events per request")
	fl.Float64Var(&o.Rate, "rate", 0, "events/s for the open-loop phase (0 = half the raw produce rate)")
	fl.DurationVar(&o.Duration, "duration", 10*time.Second, "length of each phase")
	fl.IntVar(&o.Users, "users", 100_000, "distinct user ids")
	fl.IntVar(&o.Connections, "connections", 32, "workers in the saturation phase")
	fl.BoolVar(&o.Floor, "floor", false, "run the open loop in turns against ingest and a floor server in this process that only produces the same records, already normalised")
	fl.DurationVar(&o.Warmup, "warmup", 30*time.Second, "unmeasured load first (a raw produce, then the open loop), so a freshly started broker has compiled its hot paths; 0 for none")
	fl.StringVar(&o.FloorURL, "floor-url", "", "with -floor, a floor server already running in its own process (pulse loadtest floor) instead of one in this process")
	fl.IntVar(&o.Rounds, "rounds", 3, "turns of each side of the open loop with -floor")
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
	o.Brokers = strings.Split(*brokers, ",")
	if *embedded || *inProcess {
		var brokers []string
		if !*embedded {
			brokers = o.Brokers
		}
		stop, url, addrs, err := embeddedIngest(ctx, brokers)
		if err != nil {
			return err
		}
		defer stop()
		o.URL, o.Brokers = url, addrs
	}
	_, err := loadtest.Ingest(ctx, o, os.Stdout)
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

// embeddedIngest runs an ingest server in this process in front of
// brokers, or of kfake started here when brokers is empty.
func embeddedIngest(ctx context.Context, brokers []string) (stop func(), url string, addrs []string, err error) {
	closeEmb := func() {}
	if len(brokers) == 0 {
		emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{})
		if err != nil {
			return nil, "", nil, err
		}
		closeEmb, brokers = emb.Close, emb.Addrs()
	}
	cfg, err := config.Parse([]byte("keys:\n  - name: load\n    key: dev-write-key\n    scopes: [write]\n"), "loadtest")
	if err != nil {
		closeEmb()
		return nil, "", nil, err
	}
	cfg.Kafka.Brokers = brokers
	srv, cl, err := newIngest(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		closeEmb()
		return nil, "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cl.Close()
		closeEmb()
		return nil, "", nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	// The label tells ingest's CPU from the load generator's and the
	// floor's in a -cpuprofile (pprof -tagfocus server=ingest).
	go pprof.Do(sctx, pprof.Labels("server", "ingest"), func(ctx context.Context) { _ = srv.Serve(ctx, ln); close(done) })
	return func() {
		cancel()
		<-done
		cl.Close()
		closeEmb()
	}, "http://" + ln.Addr().String(), brokers, nil
}

// redisServerCPU returns a function reading the CPU time redis-server at
// addr has used (INFO cpu), for the loadtest's CPU per request.
func redisServerCPU(addr string) (read func() (time.Duration, error), closeFn func()) {
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	return func() (time.Duration, error) {
		info, err := c.Info(context.Background(), "cpu").Result()
		if err != nil {
			return 0, err
		}
		var total float64
		for _, line := range strings.Split(info, "\n") {
			name, val, ok := strings.Cut(strings.TrimSpace(line), ":")
			if ok && (name == "used_cpu_sys" || name == "used_cpu_user") {
				f, err := strconv.ParseFloat(val, 64)
				if err != nil {
					return 0, fmt.Errorf("cannot parse redis INFO %s: %w", name, err)
				}
				total += f
			}
		}
		return time.Duration(total * float64(time.Second)), nil
	}, func() { c.Close() }
}
