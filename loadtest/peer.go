package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/proccpu"
	"github.com/pulse-rt/pulse/kafka"
)

// PeerFeatures is the job `pulse loadtest peer` runs through Pulse's
// stream and through the Kafka Streams peer (loadtest/peers/kstreams):
// windowed counts, sums, max and distinct, and last values, per user,
// like the e-commerce example's. The peer is given these same definitions
// on its command line (PeerArgs).
var PeerFeatures = []config.Feature{
	{Name: "orders_1h", Agg: "count", Event: "Order Completed", Window: config.Duration(time.Hour)},
	{Name: "orders_7d", Agg: "count", Event: "Order Completed", Window: config.Duration(7 * 24 * time.Hour)},
	{Name: "revenue_30d", Agg: "sum", Event: "Order Completed", Field: "properties.revenue", Window: config.Duration(30 * 24 * time.Hour)},
	{Name: "max_order_30d", Agg: "max", Event: "Order Completed", Field: "properties.revenue", Window: config.Duration(30 * 24 * time.Hour)},
	{Name: "products_viewed_24h", Agg: "distinct", Event: "Product Viewed", Field: "properties.product_id", Window: config.Duration(24 * time.Hour)},
	{Name: "cart_adds_24h", Agg: "count", Event: "Product Added", Window: config.Duration(24 * time.Hour)},
	{Name: "sessions_7d", Agg: "count", Event: "Session Started", Window: config.Duration(7 * 24 * time.Hour)},
	{Name: "last_category", Agg: "last", Event: "Product Viewed", Field: "properties.category"},
	{Name: "last_event_at", Agg: "last", Field: "timestamp"},
	{Name: "events_lifetime", Agg: "count"},
}

// PeerOptions configure `pulse loadtest peer`.
type PeerOptions struct {
	Brokers   []string // a real Kafka cluster
	RedisAddr string   // a real redis-server
	Jar       string   // the peer's shaded jar (testenv.KStreamsPeerJar)
	Java      string   // default: $JAVA_HOME/bin/java, else java
	JVMOpts   []string // default -Xms512m -Xmx1g
	// Events is the measured backlog, after Warm unmeasured events (JIT,
	// group join, caches); defaults 1,000,000 and 100,000. Pulse's stream
	// commits its group offsets after its batches (up to 100,000 records
	// each) at most every 100 ms, as the peer does, and the backlog is
	// timed between two samples of them: a smaller backlog is timed over
	// a few batches only.
	Events, Warm int
	Users        int // distinct user ids of the backlog; default 10,000
	Partitions   int // of each events topic; default 4
	// Threads is the peer's num.stream.threads; default min(Partitions,
	// GOMAXPROCS), the cores Pulse's stream uses.
	Threads int
	// Rate (events/s) and Duration of the freshness phase; defaults 10,000
	// and 10s, after a 2s warm-up. Each batch of Batch events (default 100)
	// carries one probe: an event of a new user, whose vector appears in
	// Redis once it was processed. Duration 0 after EnsureDefaults: none.
	Rate     float64
	Duration time.Duration
	Warmup   time.Duration
	Batch    int
	Poll     time.Duration // how often the probes' keys are looked up; default 1ms
	Timeout  time.Duration // for a backlog to be processed; default 5m
	Run      string        // names the topics, group and keys; default from the clock
	Log      io.Writer     // the peer JVM's output; default discarded
	// PulseCommand runs Pulse's stream as a process of its own, as the
	// peer runs: this command (e.g. [/path/to/pulse stream]) with -config
	// and the side's pulse.yaml appended. Without it RunPulse runs the
	// stream in this process until ctx ends (internal/system.PeerStream;
	// its CPU then includes the load generator's, small beside it). One
	// of the two is needed.
	PulseCommand []string
	RunPulse     func(ctx context.Context, cfg *config.Config) error
	// NoFreshness skips the freshness phase.
	NoFreshness bool
	// StoreWrite is Pulse's stream.store_write; default committed. early
	// writes Redis before each Kafka commit, as the peer does.
	StoreWrite string
	// CommitInterval is Pulse's stream.commit_interval; by default
	// Pulse's: 0 (a transaction per fetch) with store_write committed,
	// config.EarlyCommitInterval with early. The peer commits every 100
	// ms (Kafka Streams' default under exactly-once).
	CommitInterval time.Duration
	// CommitIntervalSet keeps a CommitInterval of 0 with early writes.
	CommitIntervalSet bool
	// CPUProfile, with RunPulse, is a file for a CPU profile of this
	// process over Pulse's freshness phase (the load generator's share
	// included).
	CPUProfile string
}

// EnsureDefaults sets each zero field that has a default to it.
func (o *PeerOptions) EnsureDefaults() {
	if o.Events == 0 {
		o.Events = 1_000_000
	}
	if o.Warm == 0 {
		o.Warm = 100_000
	}
	if o.Users == 0 {
		o.Users = 10_000
	}
	if o.Partitions == 0 {
		o.Partitions = 4
	}
	if o.Threads == 0 {
		o.Threads = min(o.Partitions, runtime.GOMAXPROCS(0))
	}
	if o.Rate == 0 {
		o.Rate = 10_000
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Warmup == 0 {
		o.Warmup = 2 * time.Second
	}
	if o.Batch == 0 {
		o.Batch = 100
	}
	if o.Poll == 0 {
		o.Poll = time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Run == "" {
		o.Run = strconv.FormatInt(time.Now().UnixMilli(), 36)
	}
	if o.StoreWrite == "" {
		o.StoreWrite = config.StoreWriteCommitted
	}
	if o.StoreWrite == config.StoreWriteEarly && o.CommitInterval == 0 && !o.CommitIntervalSet {
		o.CommitInterval = config.EarlyCommitInterval
	}
	if o.Java == "" {
		o.Java = "java"
		if home := os.Getenv("JAVA_HOME"); home != "" {
			o.Java = filepath.Join(home, "bin", "java")
		}
	}
	if o.JVMOpts == nil {
		o.JVMOpts = []string{"-Xms512m", "-Xmx1g"}
	}
}

// Check names the first field that cannot work, and why.
func (o *PeerOptions) Check() error {
	switch {
	case len(o.Brokers) == 0 || o.Brokers[0] == "":
		return errors.New("brokers: required (a running Kafka cluster)")
	case o.RedisAddr == "":
		return errors.New("redis: required (a running redis-server)")
	case len(o.PulseCommand) == 0 && o.RunPulse == nil:
		return errors.New("pulse: set PulseCommand (a pulse stream command) or RunPulse (the stream in process)")
	case o.Jar == "":
		return errors.New("jar: required (the Kafka Streams peer, built by scripts/install-test-deps.sh)")
	case o.Events < 0 || o.Warm < 0:
		return errors.New("events, warm: must not be negative")
	case o.Users <= 0:
		return errors.New("users: must be positive")
	case o.Rate < 0:
		return errors.New("rate: must not be negative")
	case o.Batch <= 0:
		return errors.New("batch: must be positive")
	}
	if _, err := os.Stat(o.Jar); err != nil {
		return fmt.Errorf("jar: %w (build it with scripts/install-test-deps.sh)", err)
	}
	return nil
}

// The two systems a run measures.
const (
	SidePulse    = "pulse"
	SideKStreams = "kstreams"
)

// PeerKey is the Redis key of a user's features on a side of run.
func PeerKey(run, side, user string) string {
	_, _, prefix := peerNames(run, side)
	if side == SidePulse {
		return prefix + "v:user:" + user
	}
	return prefix + "user:" + user
}

// peerNames are one side's topic, consumer group (the peer's
// application.id) and Redis key prefix in run.
func peerNames(run, side string) (topic, group, prefix string) {
	base := "pulse-peer-" + run + "-" + side
	return base + ".events", base, base + ":"
}

// PeerConfig is the Pulse config of a run's Pulse side: PeerFeatures
// alone (no segments, models or identity linking: the peer does none),
// its own topics and group, the Redis store under the side's prefix.
func PeerConfig(o PeerOptions, dataDir string) (*config.Config, error) {
	return config.Parse([]byte(peerConfigYAML(o, dataDir)), "loadtest peer")
}

// peerConfigYAML is PeerConfig as pulse.yaml, for `pulse stream -config`.
func peerConfigYAML(o PeerOptions, dataDir string) string {
	topic, group, prefix := peerNames(o.Run, SidePulse)
	base := strings.TrimSuffix(topic, ".events")
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %q\n", dataDir)
	fmt.Fprintf(&b, "kafka:\n  brokers: [%s]\n  client_id: pulse-loadtest-peer\n  partitions: %d\n", quoteAll(o.Brokers), o.Partitions)
	fmt.Fprintf(&b, "  topics: {events: %q", topic)
	for _, t := range []string{"invalid", "segments", "predictions", "state", "seeds", "activations", "traits", "rfm"} {
		fmt.Fprintf(&b, ", %s: %q", t, base+"."+t)
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "stream:\n  group: %q\n  listen: 127.0.0.1:0\n  store_write: %q\n  commit_interval: %s\nidentity:\n  enabled: false\n", group, o.StoreWrite, o.CommitInterval)
	fmt.Fprintf(&b, "store:\n  backend: redis\nredis:\n  addr: %q\n  key_prefix: %q\n", o.RedisAddr, prefix)
	b.WriteString("features:\n")
	for _, f := range PeerFeatures {
		fmt.Fprintf(&b, "  - {name: %s, agg: %s", f.Name, f.Agg)
		if f.Event != "" {
			fmt.Fprintf(&b, ", event: %q", f.Event)
		}
		if f.Field != "" {
			fmt.Fprintf(&b, ", field: %s", f.Field)
		}
		if f.Window != 0 {
			fmt.Fprintf(&b, ", window: %s", f.Window)
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func quoteAll(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// PeerArgs is the command line of the Kafka Streams peer for a run: the
// JVM, its jar, and the side's topic, application.id, state directory,
// Redis and key prefix, the stream threads and one --feature
// name|agg|event|field|windowMillis per feature of PeerFeatures.
func PeerArgs(o PeerOptions, stateDir string) []string {
	topic, group, prefix := peerNames(o.Run, SideKStreams)
	args := append([]string{o.Java}, o.JVMOpts...)
	args = append(args, "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-jar", o.Jar,
		"--bootstrap", strings.Join(o.Brokers, ","),
		"--topic", topic,
		"--application-id", group,
		"--state-dir", stateDir,
		"--redis", o.RedisAddr,
		"--key-prefix", prefix,
		"--threads", strconv.Itoa(o.Threads),
		"--allowed-lateness-ms", strconv.FormatInt((7*24*time.Hour).Milliseconds(), 10))
	for _, f := range PeerFeatures {
		args = append(args, "--feature", fmt.Sprintf("%s|%s|%s|%s|%d", f.Name, f.Agg, f.Event, f.Field, f.Window.D().Milliseconds()))
	}
	return args
}

// peerEvent is event i of a run's backlog: the same bytes for both sides.
// Timestamps are up to 10 minutes before base, so every window (1h and
// longer) holds the whole backlog for the length of a run.
func peerEvent(run string, i, users int, base time.Time) *kgo.Record {
	r := rand.New(rand.NewPCG(uint64(i), 11))
	user := "u" + strconv.Itoa(r.IntN(users))
	ts := base.Add(-time.Duration(r.Int64N(int64(10 * time.Minute)))).Truncate(time.Millisecond)
	return peerRecord(run, i, user, eventNames[r.IntN(len(eventNames))], ts, r)
}

// peerRecord is one normalised event, keyed by its user as ingest keys it.
// messageIds sort as i does, so ties of last break alike on both sides.
func peerRecord(run string, i int, user, name string, ts time.Time, r *rand.Rand) *kgo.Record {
	e := event.Event{Type: event.Track, MessageID: fmt.Sprintf("%s-%012d", run, i), UserID: user, Event: name,
		Timestamp: ts, ReceivedAt: ts,
		Properties: map[string]any{"product_id": "p-" + strconv.Itoa(r.IntN(5000)), "category": "c-" + strconv.Itoa(r.IntN(40)),
			"price": math.Round(r.Float64()*10000) / 100, "revenue": math.Round(r.Float64()*20000) / 100, "currency": "USD"}}
	v, err := e.Marshal()
	if err != nil {
		panic(err) // a map of strings and numbers always marshals
	}
	return &kgo.Record{Key: []byte(user), Value: v}
}

// PeerSide is what one system did in a run.
type PeerSide struct {
	Name string
	// Events processed between the two samples of the group's committed
	// offsets that bound the measured backlog, and the wall and CPU time
	// between them (the system's process; Redis's separately).
	Events        int64
	Wall, CPU     time.Duration
	RedisCPU      time.Duration
	BrokerCPU     time.Duration           // when the broker runs on this machine
	FromStart     bool                    // the backlog was too small to time alone: start and join are in
	Freshness     *hdrhistogram.Histogram // probe produced -> its vector in Redis
	Probes        int64
	Missing       int64
	FreshnessLoad *Result
	// The freshness phase's events (all produced, warm-up included) and
	// the CPU time the system, the broker and Redis spent over it: what
	// each costs at a steady rate, where the backlog's figures are at
	// full speed.
	FreshEvents                             int64
	FreshCPU, FreshBrokerCPU, FreshRedisCPU time.Duration
}

// EventsPerSec is the backlog throughput.
func (s *PeerSide) EventsPerSec() float64 { return float64(s.Events) / max(s.Wall.Seconds(), 1e-9) }

// CPUPerEvent is the system's CPU time per backlog event.
func (s *PeerSide) CPUPerEvent() time.Duration {
	return time.Duration(float64(s.CPU) / float64(max(s.Events, 1)))
}

// PeerReport is what `pulse loadtest peer` measured.
type PeerReport struct {
	Pulse, KStreams *PeerSide
	// Broker is true when the broker's CPU was measured (it runs on this
	// machine).
	Broker     bool
	Users      int // compared
	Mismatches []string
}

// Peer runs the same events through Pulse's stream (in this process, the
// Redis store) and through the Kafka Streams peer (a JVM), in turns, each
// on its own copy of the events topic: a backlog of Warm+Events events
// (throughput and CPU per event over the last Events), then, with the
// system caught up, an open-loop freshness phase. It then compares every
// user's features in Redis between the two and reports the ratios.
func Peer(ctx context.Context, o PeerOptions, w io.Writer) (*PeerReport, error) {
	o.EnsureDefaults()
	if err := o.Check(); err != nil {
		return nil, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: o.RedisAddr, DisableIdentity: true})
	defer rdb.Close()
	redisCPU, closeCPU := RedisServerCPU(o.RedisAddr)
	defer closeCPU()
	rep := &PeerReport{}
	m := peerMeters{redis: redisCPU, broker: func() time.Duration { return 0 }}
	switch read, self, err := proccpu.LocalServer(o.Brokers[0]); {
	case err != nil:
		fmt.Fprintf(w, "the broker's CPU is not reported: %v\n", err)
	case read != nil && !self:
		rep.Broker = true
		m.broker = func() time.Duration { d, _ := read(); return d }
	}
	base := time.Now()
	how := "in this process"
	if len(o.PulseCommand) > 0 {
		how = "as `" + strings.Join(o.PulseCommand, " ") + "`"
	}
	fmt.Fprintf(w, "peer: %d+%d backlog events over %d users, %d partitions, then %.0f events/s for %s; brokers %s, redis %s; Pulse's stream %s (store_write %s, commit_interval %s), peer threads %d, %d CPUs\n",
		o.Warm, o.Events, o.Users, o.Partitions, o.Rate, o.Duration, strings.Join(o.Brokers, ","), o.RedisAddr, how, o.StoreWrite, o.CommitInterval, o.Threads, runtime.NumCPU())
	for _, side := range []string{SidePulse, SideKStreams} {
		s, err := peerTurn(ctx, o, side, base, rdb, m, w)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", side, err)
		}
		if side == SidePulse {
			rep.Pulse = s
		} else {
			rep.KStreams = s
		}
	}
	var err error
	rep.Users, rep.Mismatches, err = peerCompare(ctx, o, rdb)
	if err != nil {
		return rep, err
	}
	printPeer(w, o, rep)
	if len(rep.Mismatches) > 0 {
		return rep, fmt.Errorf("the peer's features differ from Pulse's for %d of %d users, the first: %s", len(rep.Mismatches), rep.Users, rep.Mismatches[0])
	}
	return rep, nil
}

// peerMeters read the CPU time of the servers both sides use.
type peerMeters struct {
	redis  func() (time.Duration, error)
	broker func() time.Duration // 0 when not measured
}

// peerTurn fills the side's topic, runs the side over it and measures.
func peerTurn(ctx context.Context, o PeerOptions, side string, base time.Time, rdb *redis.Client, m peerMeters, w io.Writer) (*PeerSide, error) {
	topic, group, _ := peerNames(o.Run, side)
	dir, err := os.MkdirTemp("", "pulse-loadtest-peer-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cfg, err := PeerConfig(o, dir)
	if err != nil {
		return nil, err
	}
	kc := cfg.Kafka
	if side == SideKStreams {
		kc.Topics = config.Topics{Events: topic}
	}
	cl, err := kafka.NewClient(kc, kafka.ProducerOpts()...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if err := kafka.EnsureTopics(ctx, cl, kc); err != nil {
		return nil, err
	}
	total := o.Warm + o.Events
	recs := make([]*kgo.Record, 0, 2000)
	for i := range total {
		r := peerEvent(o.Run, i, o.Users, base)
		r.Topic = topic
		recs = append(recs, r)
		if len(recs) == cap(recs) || i == total-1 {
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				return nil, fmt.Errorf("producing the backlog: %w", err)
			}
			recs = recs[:0]
		}
	}
	fmt.Fprintf(w, "%s: %d events produced to %s\n", side, total, topic)

	// Start the side.
	res := &PeerSide{Name: side}
	cpu := processCPU
	var stop func() error
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// died holds why the side stopped on its own; the turn ends with it.
	died := make(chan error, 1)
	exitEarly := func(err error) {
		if sctx.Err() == nil {
			died <- err
			cancel()
		}
	}
	switch side {
	case SidePulse:
		if len(o.PulseCommand) > 0 {
			path := filepath.Join(dir, "pulse.yaml")
			if err := os.WriteFile(path, []byte(peerConfigYAML(o, dir)), 0o644); err != nil {
				return nil, err
			}
			args := append(slices.Clone(o.PulseCommand), "-config", path)
			pid, s, err := startProcess(args, o.Log, func(err error, tail string) {
				exitEarly(fmt.Errorf("pulse stream exited (%v); its output's tail:\n%s", err, tail))
			}, cancel)
			if err != nil {
				return nil, err
			}
			cpu = func() time.Duration { d, _ := proccpu.Of(pid); return d }
			stop = s
			break
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			err := o.RunPulse(sctx, cfg)
			exitEarly(fmt.Errorf("the stream stopped: %v", err))
		}()
		stop = func() error {
			cancel()
			<-done
			return nil
		}
	case SideKStreams:
		pid, s, err := startProcess(PeerArgs(o, filepath.Join(dir, "state")), o.Log, func(err error, tail string) {
			exitEarly(fmt.Errorf("the peer exited (%v); its output's tail:\n%s", err, tail))
		}, cancel)
		if err != nil {
			return nil, err
		}
		cpu = func() time.Duration { d, _ := proccpu.Of(pid); return d }
		stop = s
	}
	err = measureBacklog(sctx, o, cl, topic, group, int64(o.Warm), int64(total), cpu, m, res)
	if err == nil && !o.NoFreshness && o.Duration > 0 {
		inProcess := side == SidePulse && o.RunPulse != nil
		var snap StreamStats
		stopProfile := func() {}
		if inProcess {
			snap = SnapStreamStats()
			if stopProfile, err = StartCPUProfile(o.CPUProfile); err != nil {
				return nil, err
			}
		}
		err = measureFreshness(sctx, o, base, cl, topic, side, rdb, cpu, m, res)
		stopProfile()
		if err == nil && inProcess {
			// The stream's own timings of this phase alone: the
			// backlog's big batches would hide a stall in it.
			fmt.Fprintf(w, "%s: the stream during the freshness phase:\n", side)
			PrintStreamStatsSince(w, snap)
		}
	}
	if err == nil {
		// Every event produced is processed before the side stops: the
		// comparison is of the whole topic.
		err = waitDrained(sctx, cl, topic, group, o.Timeout)
	}
	select {
	case derr := <-died:
		err = derr
	default:
	}
	if serr := stop(); err == nil {
		err = serr
	}
	if err != nil {
		return nil, err
	}
	note := ""
	if res.FromStart {
		note = " (timed from the start, group join included: too few events to time the backlog alone)"
	}
	fmt.Fprintf(w, "%s: %d events in %s: %.0f events/s, %.2f CPU-µs/event (redis-server %.2f)%s\n", side, res.Events, res.Wall.Round(time.Millisecond), res.EventsPerSec(),
		float64(res.CPU.Nanoseconds())/1000/float64(max(res.Events, 1)), float64(res.RedisCPU.Nanoseconds())/1000/float64(max(res.Events, 1)), note)
	return res, nil
}

// measureBacklog samples the group's committed offsets on topic every
// 20 ms: from the first sample at or past warm to the first at total, it
// is the backlog's throughput and CPU. A backlog processed in one step
// is timed from the side's start instead (FromStart).
func measureBacklog(ctx context.Context, o PeerOptions, cl *kgo.Client, topic, group string, warm, total int64, cpu func() time.Duration, m peerMeters, res *PeerSide) error {
	adm := kadm.NewClient(cl)
	start, startCPU, startBroker := time.Now(), cpu(), m.broker()
	startRedisCPU, _ := m.redis()
	deadline := time.Now().Add(o.Timeout)
	var (
		started     bool
		n0          int64
		t0          time.Time
		cpu0, rcpu0 time.Duration
		broker0     time.Duration
		last        int64
	)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d events processed after %s", last, total, o.Timeout)
		}
		offs, err := adm.FetchOffsets(ctx, group)
		if err == nil {
			var n int64
			offs.Each(func(r kadm.OffsetResponse) {
				if r.Topic == topic && r.Err == nil && r.At > 0 {
					n += r.At
				}
			})
			last = n
			now := time.Now()
			if !started && n >= warm {
				started, n0, t0, cpu0, broker0 = true, n, now, cpu(), m.broker()
				rcpu0, _ = m.redis()
			}
			if started && n >= total {
				rcpu, _ := m.redis()
				res.Events, res.Wall, res.CPU, res.RedisCPU, res.BrokerCPU = n-n0, now.Sub(t0), cpu()-cpu0, rcpu-rcpu0, m.broker()-broker0
				if res.Events == 0 {
					// All of it in one step (a small backlog): time the
					// whole turn, start and group join included.
					res.FromStart = true
					res.Events, res.Wall, res.CPU, res.RedisCPU, res.BrokerCPU = total, now.Sub(start), cpu()-startCPU, rcpu-startRedisCPU, m.broker()-startBroker
				}
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitDrained waits until the group's committed offsets on topic reach
// its end offsets.
func waitDrained(ctx context.Context, cl *kgo.Client, topic, group string, timeout time.Duration) error {
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return err
	}
	var end int64
	ends.Each(func(o kadm.ListedOffset) { end += o.Offset })
	deadline := time.Now().Add(timeout)
	for {
		offs, err := adm.FetchOffsets(ctx, group)
		if err == nil {
			var n int64
			offs.Each(func(r kadm.OffsetResponse) {
				if r.Topic == topic && r.Err == nil && r.At > 0 {
					n += r.At
				}
			})
			if n >= end {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%d of %d events processed after %s", n, end, timeout)
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// measureFreshness sends the open-loop phase to topic and times each
// probe from its produce call to its key's existence in Redis.
func measureFreshness(ctx context.Context, o PeerOptions, base time.Time, cl *kgo.Client, topic, side string, rdb *redis.Client, cpu func() time.Duration, m peerMeters, res *PeerSide) error {
	key := func(user string) string { return PeerKey(o.Run, side, user) }
	type probe struct {
		key  string
		sent time.Time
	}
	var (
		mu      sync.Mutex
		pending []probe
	)
	res.Freshness = newHist()
	warmEnd := time.Now().Add(o.Warmup)
	seq0 := o.Warm + o.Events
	interval := time.Duration(float64(time.Second) * float64(o.Batch) / o.Rate)
	send := func(ctx context.Context, seq int64) (int, error) {
		r := rand.New(rand.NewPCG(uint64(seq), 13))
		now := time.Now()
		// The same timestamps on both sides (last_event_at must agree):
		// the schedule's, from the run's base, never after now.
		ts := base.Add(time.Duration(seq) * interval).Truncate(time.Millisecond)
		recs := make([]*kgo.Record, o.Batch)
		first := seq0 + int(seq)*o.Batch
		probeUser := "probe-" + o.Run + "-" + strconv.FormatInt(seq, 10)
		for j := range recs {
			user := probeUser
			name := ProbeEvent
			if j > 0 {
				user, name = "u"+strconv.Itoa(r.IntN(o.Users)), eventNames[r.IntN(len(eventNames))]
			}
			recs[j] = peerRecord(o.Run, first+j, user, name, ts, r)
			recs[j].Topic = topic
		}
		if !now.Before(warmEnd) {
			mu.Lock()
			pending = append(pending, probe{key(probeUser), now})
			mu.Unlock()
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return 0, err
		}
		return o.Batch, nil
	}
	done := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		var stopAt time.Time
		for {
			mu.Lock()
			ps := slices.Clone(pending)
			mu.Unlock()
			select {
			case <-done:
				if stopAt.IsZero() {
					stopAt = time.Now().Add(10 * time.Second)
				}
			default:
			}
			if !stopAt.IsZero() && (len(ps) == 0 || time.Now().After(stopAt)) {
				res.Missing = int64(len(ps))
				return
			}
			if len(ps) > 0 {
				pipe := rdb.Pipeline()
				cmds := make([]*redis.IntCmd, len(ps))
				for i, p := range ps {
					cmds[i] = pipe.Exists(ctx, p.key)
				}
				_, _ = pipe.Exec(ctx)
				seen := time.Now()
				found := map[string]bool{}
				for i, c := range cmds {
					if c.Val() == 1 {
						found[ps[i].key] = true
						_ = res.Freshness.RecordValue(max(1, seen.Sub(ps[i].sent).Microseconds()))
						res.Probes++
					}
				}
				if len(found) > 0 {
					mu.Lock()
					pending = slices.DeleteFunc(pending, func(p probe) bool { return found[p.key] })
					mu.Unlock()
				}
			}
			if ctx.Err() != nil {
				return
			}
			time.Sleep(o.Poll)
		}
	}()
	cpu0, broker0 := cpu(), m.broker()
	redis0, _ := m.redis()
	var produced atomic.Int64
	res.FreshnessLoad = OpenLoop(ctx, Options{Name: side + " produce", Rate: o.Rate / float64(o.Batch), Duration: o.Duration, Warmup: o.Warmup}, func(ctx context.Context, seq int64) (int, error) {
		n, err := send(ctx, seq)
		produced.Add(int64(n))
		return n, err
	})
	redis1, _ := m.redis()
	res.FreshEvents, res.FreshCPU, res.FreshBrokerCPU, res.FreshRedisCPU = produced.Load(), cpu()-cpu0, m.broker()-broker0, redis1-redis0
	close(done)
	<-polled
	if res.FreshnessLoad.FirstErr != nil {
		return fmt.Errorf("producing the freshness load: %w", res.FreshnessLoad.FirstErr)
	}
	return nil
}

// PeerCompare reads every backlog user's features of run o.Run from both
// sides' keys and lists the users whose features differ.
func PeerCompare(ctx context.Context, o PeerOptions) (users int, mismatches []string, err error) {
	o.EnsureDefaults()
	rdb := redis.NewClient(&redis.Options{Addr: o.RedisAddr, DisableIdentity: true})
	defer rdb.Close()
	return peerCompare(ctx, o, rdb)
}

func peerCompare(ctx context.Context, o PeerOptions, rdb *redis.Client) (int, []string, error) {
	users := map[string]bool{}
	for i := range o.Warm + o.Events {
		r := rand.New(rand.NewPCG(uint64(i), 11))
		users["u"+strconv.Itoa(r.IntN(o.Users))] = true
	}
	ids := slices.Sorted(func(yield func(string) bool) {
		for u := range users {
			if !yield(u) {
				return
			}
		}
	})
	var mismatches []string
	for chunk := range slices.Chunk(ids, 500) {
		pipe := rdb.Pipeline()
		pv := make([]*redis.StringCmd, len(chunk))
		kv := make([]*redis.MapStringStringCmd, len(chunk))
		for i, id := range chunk {
			pv[i] = pipe.Get(ctx, PeerKey(o.Run, SidePulse, id))
			kv[i] = pipe.HGetAll(ctx, PeerKey(o.Run, SideKStreams, id))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return 0, nil, fmt.Errorf("reading the features back: %w", err)
		}
		for i, id := range chunk {
			if d := peerDiff(pv[i], kv[i]); d != "" {
				mismatches = append(mismatches, "user "+id+": "+d)
			}
		}
	}
	return len(ids), mismatches, nil
}

// peerDiff says how a user's Pulse vector and peer hash differ ("" when
// they agree): every feature of PeerFeatures, numbers to 1e-9 relative.
func peerDiff(pulse *redis.StringCmd, peer *redis.MapStringStringCmd) string {
	b, err := pulse.Bytes()
	if err != nil {
		return "no Pulse vector: " + err.Error()
	}
	v, err := featurestore.Decode(b)
	if err != nil {
		return "Pulse vector: " + err.Error()
	}
	h := peer.Val()
	if len(h) == 0 {
		return "no peer hash"
	}
	var diffs []string
	for _, f := range PeerFeatures {
		text, ok := h[f.Name]
		if !ok {
			diffs = append(diffs, f.Name+" missing in the peer's hash")
			continue
		}
		var pv any
		if err := json.Unmarshal([]byte(text), &pv); err != nil {
			diffs = append(diffs, fmt.Sprintf("%s: peer's %q is not JSON", f.Name, text))
			continue
		}
		if !peerEqual(v.Features[f.Name], pv) {
			diffs = append(diffs, fmt.Sprintf("%s: Pulse %v, peer %v", f.Name, v.Features[f.Name], pv))
		}
	}
	return strings.Join(diffs, "; ")
}

func peerEqual(a, b any) bool {
	fa, aok := a.(float64)
	fb, bok := b.(float64)
	if aok && bok {
		return math.Abs(fa-fb) <= 1e-9*max(1, math.Abs(fa), math.Abs(fb))
	}
	return fmt.Sprint(a) == fmt.Sprint(b) && (a == nil) == (b == nil)
}

func printPeer(w io.Writer, o PeerOptions, rep *PeerReport) {
	p, k := rep.Pulse, rep.KStreams
	fmt.Fprintf(w, "\n%-22s %14s %14s %10s\n", "", "Pulse", "Kafka Streams", "ratio")
	fmt.Fprintf(w, "%-22s %14.0f %14.0f %9.1fx\n", "backlog events/s", p.EventsPerSec(), k.EventsPerSec(), p.EventsPerSec()/max(k.EventsPerSec(), 1e-9))
	// cpuRow prints one CPU time per event of each side and their ratio.
	cpuRow := func(name string, d func(*PeerSide) time.Duration, n func(*PeerSide) int64) {
		a := float64(d(p).Nanoseconds()) / 1000 / float64(max(n(p), 1))
		b := float64(d(k).Nanoseconds()) / 1000 / float64(max(n(k), 1))
		fmt.Fprintf(w, "%-22s %14.2f %14.2f %9.2fx\n", name, a, b, a/max(b, 1e-9))
	}
	backlog := func(s *PeerSide) int64 { return s.Events }
	cpuRow("CPU-µs/event", func(s *PeerSide) time.Duration { return s.CPU }, backlog)
	cpuRow("redis CPU-µs/event", func(s *PeerSide) time.Duration { return s.RedisCPU }, backlog)
	if rep.Broker {
		cpuRow("broker CPU-µs/event", func(s *PeerSide) time.Duration { return s.BrokerCPU }, backlog)
	}
	if p.Freshness != nil && k.Freshness != nil {
		for _, qq := range []float64{50, 99} {
			a, b := p.Freshness.ValueAtQuantile(qq), k.Freshness.ValueAtQuantile(qq)
			fmt.Fprintf(w, "%-22s %14s %14s %9.2fx\n", fmt.Sprintf("freshness p%.0f", qq), q(p.Freshness, qq), q(k.Freshness, qq), float64(a)/max(float64(b), 1))
		}
		fmt.Fprintf(w, "%-22s %14d %14d\n", "probes", p.Probes, k.Probes)
		steady := func(s *PeerSide) int64 { return s.FreshEvents }
		cpuRow("steady CPU-µs/event", func(s *PeerSide) time.Duration { return s.FreshCPU }, steady)
		if rep.Broker {
			cpuRow("steady broker CPU", func(s *PeerSide) time.Duration { return s.FreshBrokerCPU }, steady)
		}
		cpuRow("steady redis CPU", func(s *PeerSide) time.Duration { return s.FreshRedisCPU }, steady)
		if p.Missing+k.Missing > 0 {
			fmt.Fprintf(w, "%-22s %14d %14d\n", "missing after 10s", p.Missing, k.Missing)
		}
		fmt.Fprintf(w, "freshness: %.0f events/s in batches of %d, one probe (a new user) each, produced -> its key in Redis, polled every %s\n", o.Rate, o.Batch, o.Poll)
		gen := ""
		if len(o.PulseCommand) == 0 {
			gen = " (Pulse's: this process, the load generator's share included)"
		}
		fmt.Fprintf(w, "steady: CPU over the freshness phase, warm-up included, per event produced in it: the system's process%s, the broker, redis-server\n", gen)
	}
	fmt.Fprintf(w, "agreement: %d users compared, %d differ\n", rep.Users, len(rep.Mismatches))
}

// startProcess starts argv with its output to log (nil: discarded);
// exited is called with the tail of that output if it ends before stop,
// which cancels (first, so the exit it causes is no failure), sends
// SIGTERM and waits (30 s, then SIGKILL).
func startProcess(argv []string, log io.Writer, exited func(err error, tail string), cancel func()) (pid int, stop func() error, err error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	if log == nil {
		log = io.Discard
	}
	tail := &tailWriter{max: 8000}
	// One writer for both: exec then writes them from one goroutine (two
	// writers over the same buffers raced under -race: TestPeerAgrees).
	out := io.MultiWriter(log, tail)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := cmd.Wait()
		exited(err, tail.String())
	}()
	return cmd.Process.Pid, func() error {
		cancel()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		return nil
	}, nil
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
