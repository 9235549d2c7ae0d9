package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/pulse-rt/pulse/internal/system"
	"github.com/pulse-rt/pulse/loadtest"
)

func runLoadtest(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: pulse loadtest ingest|predict|freshness|segments|floor [flags]")
	}
	run := map[string]func(context.Context, []string) error{
		"ingest":    loadtestIngest,
		"floor":     loadtestFloor,
		"predict":   loadtestPredict,
		"freshness": loadtestFreshness,
		"segments":  loadtestSegments,
	}[args[0]]
	if run == nil {
		return fmt.Errorf("unknown loadtest %q (want ingest, predict, freshness, segments or floor)", args[0])
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
