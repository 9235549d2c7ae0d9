package loadtest

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// The Flags methods register an Options type's fields on a command's flag
// set (`pulse loadtest ...`). They set the defaults first (EnsureDefaults)
// and each flag defaults to its field's value, so the command and the
// package cannot drift apart; the targets default to a local `pulse dev`.

// Flags registers the fields of `pulse loadtest ingest`. Its -warmup is
// the command's own default, 30s (a fresh broker's hot paths compile
// meanwhile); the package's is none.
func (o *IngestOptions) Flags(fl *flag.FlagSet) {
	o.EnsureDefaults()
	fl.StringVar(&o.URL, "url", "http://127.0.0.1:8080", "ingest base URL")
	fl.StringVar(&o.WriteKey, "key", "dev-write-key", "write key")
	fl.IntVar(&o.Batch, "batch", o.Batch, "events per request")
	fl.Float64Var(&o.Rate, "rate", o.Rate, "events/s for the open-loop phase (0 = half the raw produce rate)")
	fl.DurationVar(&o.Duration, "duration", o.Duration, "length of each phase")
	fl.IntVar(&o.Users, "users", o.Users, "distinct user ids")
	fl.IntVar(&o.Connections, "connections", o.Connections, "workers in the saturation phase")
	fl.BoolVar(&o.Floor, "floor", false, "run the open loop in turns against ingest and a floor server in this process that only produces the same records, already normalised")
	fl.DurationVar(&o.Warmup, "warmup", 30*time.Second, "unmeasured load first (a raw produce, then the open loop), so a freshly started broker has compiled its hot paths; 0 for none")
	fl.StringVar(&o.FloorURL, "floor-url", "", "with -floor, a floor server already running in its own process (pulse loadtest floor) instead of one in this process")
	fl.IntVar(&o.Rounds, "rounds", o.Rounds, "turns of each side of the open loop with -floor")
}

// Flags registers the fields of `pulse loadtest predict`.
func (o *PredictOptions) Flags(fl *flag.FlagSet) {
	o.EnsureDefaults()
	fl.Var((*rates)(&o.Rates), "rates", "open-loop rates, requests/s (comma-separated)")
	fl.StringVar(&o.URL, "url", "http://127.0.0.1:8081", "scorer base URL")
	fl.StringVar(&o.Key, "key", "dev-read-key", "read key")
	fl.StringVar(&o.Model, "model", o.Model, "model to call")
	fl.IntVar(&o.Users, "users", o.Users, "distinct user ids (0..users-1), all in the store")
	fl.DurationVar(&o.Duration, "duration", o.Duration, "length of each phase")
	fl.DurationVar(&o.Warmup, "warmup", o.Warmup, "warm-up before each phase (sent, not recorded)")
	fl.IntVar(&o.Connections, "connections", o.Connections, "workers in the saturation phase")
	fl.IntVar(&o.Rounds, "rounds", o.Rounds, "split each phase into this many turns alternating the baseline and the scorer (steadier ratios on a busy machine)")
}

// rates is PredictOptions.Rates as a flag: comma-separated positive numbers.
type rates []float64

func (r *rates) String() string {
	s := make([]string, len(*r))
	for i, v := range *r {
		s[i] = strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strings.Join(s, ",")
}

func (r *rates) Set(s string) error {
	*r = nil
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			return fmt.Errorf("%q is not a positive number", f)
		}
		*r = append(*r, v)
	}
	return nil
}

// Flags registers the traffic fields of `pulse loadtest freshness`.
func (o *FreshnessOptions) Flags(fl *flag.FlagSet) {
	o.EnsureDefaults()
	trafficFlags(fl, &o.Rate, &o.Batch, &o.Duration, &o.Warmup, &o.Users)
}

// Flags registers the traffic fields of `pulse loadtest segments`.
func (o *SegmentsOptions) Flags(fl *flag.FlagSet) {
	o.EnsureDefaults()
	trafficFlags(fl, &o.Rate, &o.Batch, &o.Duration, &o.Warmup, &o.Users)
}

// trafficFlags registers the end-to-end targets' traffic, each flag
// defaulting to the value already there.
func trafficFlags(fl *flag.FlagSet, rate *float64, batch *int, duration, warmup *time.Duration, users *int) {
	fl.Float64Var(rate, "rate", *rate, "events/s, open loop")
	fl.IntVar(batch, "batch", *batch, "events per request (one of them the probe)")
	fl.DurationVar(duration, "duration", *duration, "measured length")
	fl.DurationVar(warmup, "warmup", *warmup, "warm-up (sent, not measured)")
	fl.IntVar(users, "users", *users, "background user ids")
}

// Flags registers the fields of `pulse loadtest identity`.
func (o *IdentityOptions) Flags(fl *flag.FlagSet) {
	o.EnsureDefaults()
	trafficFlags(fl, &o.Rate, &o.Batch, &o.Duration, &o.Warmup, &o.Users)
	fl.Float64Var(&o.Merges, "merges", o.Merges, "probe merges started per second (an anonymous probe event, then its identify)")
	fl.DurationVar(&o.Poll, "poll", o.Poll, "how often a probe asks the scorer at first (then every 2% of its wait so far)")
}

// Flags registers the fields of `pulse loadtest peer`. -brokers and -redis
// default to the test servers' environment (PULSE_TEST_KAFKA,
// PULSE_TEST_REDIS: run under bin/testservers), else a local broker and
// Redis; -jar to $PULSE_KSTREAMS_PEER_JAR, else the peer's build in this
// checkout.
func (o *PeerOptions) Flags(fl *flag.FlagSet, brokers *string) {
	o.EnsureDefaults()
	fl.StringVar(brokers, "brokers", envOr("PULSE_TEST_KAFKA", "127.0.0.1:9092"), "a running Kafka cluster's brokers (comma-separated)")
	fl.StringVar(&o.RedisAddr, "redis", envOr("PULSE_TEST_REDIS", "127.0.0.1:6379"), "a running redis-server")
	fl.StringVar(&o.Jar, "jar", envOr("PULSE_KSTREAMS_PEER_JAR", "loadtest/peers/kstreams/target/pulse-peer-kstreams.jar"), "the Kafka Streams peer's jar (scripts/install-test-deps.sh builds it)")
	fl.IntVar(&o.Events, "events", o.Events, "measured backlog events, each side")
	fl.IntVar(&o.Warm, "warm", o.Warm, "unmeasured backlog events before them")
	fl.IntVar(&o.Users, "users", o.Users, "distinct user ids of the backlog")
	fl.IntVar(&o.Partitions, "partitions", o.Partitions, "partitions of each side's events topic")
	fl.IntVar(&o.Threads, "threads", o.Threads, "the peer's stream threads (default: partitions, at most GOMAXPROCS)")
	fl.Float64Var(&o.Rate, "rate", o.Rate, "events/s of the freshness phase")
	fl.DurationVar(&o.Duration, "duration", o.Duration, "measured length of the freshness phase")
	fl.DurationVar(&o.Warmup, "warmup", o.Warmup, "unmeasured start of the freshness phase")
	fl.IntVar(&o.Batch, "batch", o.Batch, "events per produce in the freshness phase (one of them the probe)")
	fl.BoolVar(&o.NoFreshness, "no-freshness", false, "measure the backlog only")
	fl.StringVar(&o.StoreWrite, "store-write", o.StoreWrite, "Pulse's stream.store_write: committed, or early (the store written before each Kafka commit, as the peer writes Redis)")
	fl.Var(setDuration{&o.CommitInterval, &o.CommitIntervalSet}, "commit-interval", "Pulse's stream.commit_interval: how long a transaction stays open for the fetches after its first (0: one per fetch; default Pulse's: 0, or 100ms with -store-write early; the peer commits every 100ms)")
	fl.StringVar(&o.CPUProfile, "cpuprofile", "", "with -in-process: write a CPU profile of this process over Pulse's freshness phase to `FILE`")
}

// setDuration is a duration flag that notes it was given, so that an
// explicit 0 differs from the default.
type setDuration struct {
	d   *time.Duration
	set *bool
}

func (f setDuration) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f setDuration) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*f.d, *f.set = d, true
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
