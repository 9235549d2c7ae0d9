package destination

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/model"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"
)

// Route is one destination inside a runner: which changes it takes, its
// sink and its delivery policy.
type Route struct {
	Name   string // the metrics' destination label and the dead letters' destination
	Type   string // the sink's type, for dead letters
	Target string // the endpoint or topic, for dead letters
	// Match says which segments' changes it takes; nil: none.
	Match func(segment string) bool
	// MatchTrait says which traits' score changes it takes (those that
	// pass TraitFilter too); nil: none, and the runner does not read the
	// traits topic for it.
	MatchTrait  func(trait string) bool
	TraitFilter TraitFilter
	Sink        Sink
	// MaxRetries after the first attempt; 0 is none.
	MaxRetries int
	// Timeout bounds one attempt (one Deliver call).
	Timeout time.Duration
	// BatchSize is the most changes in one Deliver call (at least 1).
	BatchSize int
	// Concurrency is the most Deliver calls in flight (at least 1).
	Concurrency int
	// RequestsPerSecond and RecordsPerSecond pace the Deliver calls and
	// the changes in them; 0 is no bound.
	RequestsPerSecond, RecordsPerSecond float64

	requests, records *rate.Limiter
}

// takes reports whether the route delivers c.
func (rt *Route) takes(c *Change) bool {
	if c.Kind == KindTrait {
		return rt.MatchTrait != nil && rt.MatchTrait(c.Trait.Trait) && rt.TraitFilter.Passes(c.Trait.Previous, c.Trait.Score)
	}
	return rt.Match != nil && rt.Match(c.Segment)
}

// kinds are the kinds of change the route takes: a route with neither
// matcher counts as a segment route.
func (rt *Route) kinds() []string {
	var out []string
	if rt.Match != nil || rt.MatchTrait == nil {
		out = append(out, KindSegment)
	}
	if rt.MatchTrait != nil {
		out = append(out, KindTrait)
	}
	return out
}

// Options tune a runner; zero values take the defaults (EnsureDefaults).
type Options struct {
	// Name names the runner in logs, the lag and paused gauges and the
	// admin API. Required.
	Name string
	// Group is the consumer group. Required.
	Group string
	// DeadTopic receives the changes given up. Required.
	DeadTopic string
	// BaseBackoff is the wait before the first retry, overriding the
	// default 1s. It doubles each retry, and each wait is jittered down to
	// half of it; a Retry-After answer may lengthen a wait up to MaxBackoff.
	BaseBackoff time.Duration
	// MaxBackoff caps one wait, overriding the default 2m.
	MaxBackoff time.Duration
	// FromStart makes a new consumer group start at the beginning of the
	// topic, overriding the default: the end, so turning a destination on
	// does not replay every past change.
	FromStart bool
	// LagInterval is how often the lag gauge is measured, overriding the
	// default 5s.
	LagInterval time.Duration
	// CommitInterval is how often a partition's progress is committed
	// while a long poll is delivered (and always at its end), overriding
	// the default 1s: what a crash delivers again is bounded by it.
	CommitInterval time.Duration
	// Log is the logger, overriding the default slog.Default().
	Log *slog.Logger
}

// EnsureDefaults sets every zero field that has a default.
func (o *Options) EnsureDefaults() {
	if o.BaseBackoff <= 0 {
		o.BaseBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 2 * time.Minute
	}
	if o.LagInterval <= 0 {
		o.LagInterval = 5 * time.Second
	}
	if o.CommitInterval <= 0 {
		o.CommitInterval = time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Runner consumes the segments topic (and, when a route takes traits, the
// traits topic) in its own consumer group and delivers each change to
// the routes that take it, with the guarantees of the package doc. Run it
// once.
type Runner struct {
	cfg    *config.Config
	routes []*Route
	opts   Options
	log    *slog.Logger
	topics []string // what it consumes

	mu     sync.Mutex
	paused bool
	resume chan struct{} // closed on Resume
}

// NewRunner builds a runner over routes.
func NewRunner(cfg *config.Config, routes []*Route, o Options) *Runner {
	o.EnsureDefaults()
	kinds := map[string]bool{}
	for _, rt := range routes {
		rt.BatchSize = max(rt.BatchSize, 1)
		rt.Concurrency = max(rt.Concurrency, 1)
		if rt.RequestsPerSecond > 0 {
			rt.requests = rate.NewLimiter(rate.Limit(rt.RequestsPerSecond), max(1, int(rt.RequestsPerSecond)))
		}
		if rt.RecordsPerSecond > 0 {
			burst := max(1, int(rt.RecordsPerSecond))
			rt.records = rate.NewLimiter(rate.Limit(rt.RecordsPerSecond), burst)
			// A batch never asks for more tokens than the bucket holds.
			rt.BatchSize = min(rt.BatchSize, burst)
		}
		// Every series at 0 from the start, so that a dashboard shows the
		// zeros and Prometheus's increase() counts the first dead letter
		// (a counter first seen at 1 has grown by nothing).
		for _, k := range rt.kinds() {
			deliveredTotal.WithLabelValues(rt.Name, k)
			retriesTotal.WithLabelValues(rt.Name, k)
			deliverySeconds.WithLabelValues(rt.Name, k)
			deadLettersTotal.WithLabelValues(rt.Name, k, ReasonRejected)
			deadLettersTotal.WithLabelValues(rt.Name, k, ReasonExhausted)
			kinds[k] = true
		}
	}
	r := &Runner{cfg: cfg, routes: routes, opts: o, log: o.Log.With("destination", o.Name)}
	if kinds[KindSegment] || len(routes) == 0 {
		kinds[KindSegment] = true
		if cfg != nil {
			r.topics = append(r.topics, cfg.Kafka.Topics.Segments)
		}
	}
	if kinds[KindTrait] && cfg != nil {
		r.topics = append(r.topics, cfg.Kafka.Topics.Traits)
	}
	// Undecodable records are counted under the runner's name (deadLetter).
	for k := range kinds {
		deadLettersTotal.WithLabelValues(o.Name, k, ReasonUndecodable)
	}
	pausedGauge.WithLabelValues(o.Name).Set(0)
	lagRecords.WithLabelValues(o.Name)
	return r
}

// Name is the runner's name (Options.Name).
func (r *Runner) Name() string { return r.opts.Name }

// Pause stops deliveries at the next batch: the attempt in flight
// finishes (or is retried after Resume); nothing is committed past it.
func (r *Runner) Pause() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.paused {
		r.paused = true
		r.resume = make(chan struct{})
		pausedGauge.WithLabelValues(r.opts.Name).Set(1)
		r.log.Info("destination paused")
	}
}

// Resume lets a paused runner deliver again.
func (r *Runner) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.paused {
		r.paused = false
		close(r.resume)
		pausedGauge.WithLabelValues(r.opts.Name).Set(0)
		r.log.Info("destination resumed")
	}
}

// Paused reports whether the runner is paused.
func (r *Runner) Paused() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.paused
}

// waitResumed blocks while the runner is paused.
func (r *Runner) waitResumed(ctx context.Context) error {
	r.mu.Lock()
	paused, resume := r.paused, r.resume
	r.mu.Unlock()
	if !paused {
		return nil
	}
	select {
	case <-resume:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run delivers until ctx ends; it returns an error only when a change can
// be neither delivered nor dead-lettered (Kafka refused the dead letter).
func (r *Runner) Run(ctx context.Context) error {
	reset := kgo.NewOffset().AtEnd()
	if r.opts.FromStart {
		reset = kgo.NewOffset().AtStart()
	}
	var owed owedCommits
	opts := append(append(kafka.ProducerOpts(), kafka.GroupOpts(r.opts.Group)...),
		kgo.ConsumeTopics(r.topics...),
		kgo.ConsumeResetOffset(reset),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Offsets are committed after delivery. A partition revoked while
		// its records are retried is not committed: its new owner delivers
		// them again (at least once), rather than holding the rebalance for
		// minutes of backoff.
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsRevoked(owed.forget),
		kgo.OnPartitionsLost(owed.forget),
	)
	cl, err := kafka.NewClient(r.cfg.Kafka, opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if *r.cfg.Kafka.CreateTopics {
		if err := createTopic(ctx, cl, r.cfg.Kafka, r.opts.DeadTopic); err != nil {
			return err
		}
	}
	lctx, stopLag := context.WithCancel(ctx)
	var lagDone sync.WaitGroup
	lagDone.Go(func() { r.measureLag(lctx, cl) })
	defer lagDone.Wait()
	defer stopLag()
	r.log.Info("destination delivering", "group", r.opts.Group, "topics", r.topics, "routes", len(r.routes), "dead_letter_topic", r.opts.DeadTopic)
	for {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if owed.any() {
			pctx, cancel = context.WithTimeout(ctx, commitRetry)
		}
		fs := cl.PollFetches(pctx)
		timedOut := pctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			r.commit(ctx, cl, nil, &owed) // what a refused commit left
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			if timedOut && errors.Is(err, context.DeadlineExceeded) {
				return // the wait for a commit retry
			}
			r.log.Warn("destination fetch failed", "topic", t, "partition", p, "err", err)
		})
		done, err := r.deliverAll(ctx, cl, fs)
		// What was delivered or dead-lettered is committed even when
		// stopping, so a clean stop repeats nothing.
		r.commit(ctx, cl, done, &owed)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// commitRetry is how long Run waits for records, when a commit was
// refused, before it commits again.
const commitRetry = time.Second

// commit commits done and what owed holds. A commit the group refuses (a
// rebalance, the coordinator moving) is kept in owed and made again: with
// the next records, or after commitRetry when none come, so an idle
// partition's offset does not stay behind its deliveries (its lag up, and
// a restart delivering those changes again).
func (r *Runner) commit(ctx context.Context, cl *kgo.Client, done []*kgo.Record, owed *owedCommits) {
	recs := append(done, owed.records()...)
	if len(recs) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	gen := owed.generation()
	if err := cl.CommitRecords(cctx, recs...); err != nil {
		// Delivered but not committed: made again, or, after a
		// rebalance, delivered again by the new owner (at least once).
		if !owed.any() {
			r.log.Warn("destination offsets not committed; trying again", "err", err)
		}
		owed.keep(recs, gen)
		return
	}
	owed.clear()
}

// owedCommits holds, per partition, the last record done whose commit the
// group refused. A revoked partition is forgotten: its new owner goes on
// from the group's offset, and committing ours could move that back.
type owedCommits struct {
	mu   sync.Mutex
	last map[string]map[int32]*kgo.Record
	gen  int // revocations so far
}

// generation counts the revocations so far, for keep.
func (o *owedCommits) generation() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.gen
}

func (o *owedCommits) any() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.last) > 0
}

func (o *owedCommits) records() []*kgo.Record {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []*kgo.Record
	for _, parts := range o.last {
		for _, r := range parts {
			out = append(out, r)
		}
	}
	return out
}

// keep records, per partition, the latest of recs, unless partitions were
// revoked since generation gen (recs may hold some of them: the new
// owners deliver those again, at least once).
func (o *owedCommits) keep(recs []*kgo.Record, gen int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.gen != gen {
		clear(o.last)
		return
	}
	if o.last == nil {
		o.last = map[string]map[int32]*kgo.Record{}
	}
	for _, r := range recs {
		parts := o.last[r.Topic]
		if parts == nil {
			parts = map[int32]*kgo.Record{}
			o.last[r.Topic] = parts
		}
		if at := parts[r.Partition]; at == nil || at.Offset < r.Offset {
			parts[r.Partition] = r
		}
	}
}

func (o *owedCommits) clear() {
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.last)
}

// forget drops revoked (or lost) partitions: an OnPartitionsRevoked and
// OnPartitionsLost callback.
func (o *owedCommits) forget(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.gen++
	for topic, parts := range revoked {
		for _, p := range parts {
			delete(o.last[topic], p)
		}
		if len(o.last[topic]) == 0 {
			delete(o.last, topic)
		}
	}
}

func createTopic(ctx context.Context, cl *kgo.Client, k config.Kafka, topic string) error {
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, int32(k.Partitions), int16(k.ReplicationFactor), nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("cannot create topic %s: %w", topic, err)
	}
	return nil
}

// measureLag sets the lag gauge every LagInterval: the records past the
// group's committed offsets, on the partitions with a commit, of every
// topic it consumes.
func (r *Runner) measureLag(ctx context.Context, cl *kgo.Client) {
	adm := kadm.NewClient(cl)
	gauge := lagRecords.WithLabelValues(r.opts.Name)
	for {
		lags, err := adm.Lag(ctx, r.opts.Group)
		if err == nil {
			if l, ok := lags[r.opts.Group]; ok && l.Error() == nil {
				var total int64
				for _, topic := range r.topics {
					for _, m := range l.Lag[topic] {
						if m.Err == nil && m.Commit.At >= 0 && m.Lag > 0 {
							total += m.Lag
						}
					}
				}
				gauge.Set(float64(total))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.opts.LagInterval):
		}
	}
}

// deliverAll delivers a poll's records: partitions in parallel, each
// partition's in order. It returns, per partition, the last record that
// was delivered or dead-lettered (with those before it), for the commit.
func (r *Runner) deliverAll(ctx context.Context, cl *kgo.Client, fs kgo.Fetches) ([]*kgo.Record, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var done []*kgo.Record
	var first error
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		wg.Go(func() {
			last, err := r.deliverPartition(ctx, cl, p.Records)
			mu.Lock()
			defer mu.Unlock()
			if last != nil {
				done = append(done, last)
			}
			if err != nil && first == nil {
				first = err
			}
		})
	})
	wg.Wait()
	return done, first
}

// item is one change for one route, with its delivery's history.
type item struct {
	change Change
	rec    *kgo.Record
	first  time.Time
	last   Failure
}

// deliverPartition delivers one partition's records in order, a group at
// a time: a group holds at most one change per entity, so an entity's
// change is sent only once the one before it was delivered or given up.
// It returns the last record done.
func (r *Runner) deliverPartition(ctx context.Context, cl *kgo.Client, recs []*kgo.Record) (*kgo.Record, error) {
	var last *kgo.Record
	committed := time.Now()
	for i := 0; i < len(recs); {
		if last != nil && time.Since(committed) >= r.opts.CommitInterval {
			if err := cl.CommitRecords(ctx, last); err != nil && ctx.Err() == nil {
				r.log.Warn("destination offsets not committed", "err", err)
			}
			committed = time.Now()
		}
		if err := r.waitResumed(ctx); err != nil {
			return last, err
		}
		groups := make([][]*item, len(r.routes))
		entities := map[string]bool{}
		j := i
	group:
		for ; j < len(recs); j++ {
			rec := recs[j]
			c, err := r.decode(rec)
			if err != nil {
				if err := r.deadLetter(ctx, cl, nil, &item{change: c, rec: rec, first: time.Now(), last: Failure{Err: err}}, ReasonUndecodable, 0); err != nil {
					return last, err
				}
				continue
			}
			entity := c.Entity + "\x00" + c.EntityID
			var takers []int
			for k, rt := range r.routes {
				if rt.takes(&c) {
					if entities[entity] || len(groups[k]) >= rt.BatchSize*rt.Concurrency {
						break group
					}
					takers = append(takers, k)
				}
			}
			if len(takers) > 0 {
				entities[entity] = true
			}
			for _, k := range takers {
				groups[k] = append(groups[k], &item{change: c, rec: rec})
			}
		}
		var wg sync.WaitGroup
		errs := make([]error, len(r.routes))
		for k, g := range groups {
			if len(g) > 0 {
				wg.Go(func() { errs[k] = r.deliverRoute(ctx, cl, r.routes[k], g) })
			}
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return last, err
		}
		last = recs[j-1]
		i = j
	}
	return last, nil
}

// decode reads a record of the segments or the traits topic as a Change;
// on error the Change still says its Kind.
func (r *Runner) decode(rec *kgo.Record) (Change, error) {
	if r.cfg != nil && rec.Topic == r.cfg.Kafka.Topics.Traits && rec.Topic != r.cfg.Kafka.Topics.Segments {
		ts, err := model.DecodeTraitScore(rec.Value)
		if err != nil {
			return Change{Kind: KindTrait}, err
		}
		return TraitChange(&ts, rec.Value), nil
	}
	head, err := segment.DecodeRecord(rec.Value)
	if err != nil {
		return Change{Kind: KindSegment}, err
	}
	return SegmentChange(head, rec.Value), nil
}

// deliverRoute delivers items to one route, retrying the failed ones
// until each is delivered or given up (dead-lettered). An error means some
// item was neither (ctx ended, or Kafka refused the dead letter).
func (r *Runner) deliverRoute(ctx context.Context, cl *kgo.Client, rt *Route, pending []*item) error {
	now := time.Now()
	for _, it := range pending {
		it.first = now
	}
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			if err := r.waitResumed(ctx); err != nil {
				return err
			}
		}
		for _, it := range pending {
			it.change.Attempt = attempt
		}
		failed := r.attempt(ctx, rt, pending)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var again []*item
		var wait time.Duration
		for _, it := range failed {
			switch {
			case !it.last.Retryable:
				if err := r.deadLetter(ctx, cl, rt, it, ReasonRejected, attempt); err != nil {
					return err
				}
			case attempt > rt.MaxRetries:
				if err := r.deadLetter(ctx, cl, rt, it, ReasonExhausted, attempt); err != nil {
					return err
				}
			default:
				again = append(again, it)
				wait = max(wait, it.last.RetryAfter)
			}
		}
		if len(again) == 0 {
			return nil
		}
		for _, it := range again {
			retriesTotal.WithLabelValues(rt.Name, it.change.Kind).Inc()
		}
		r.log.Debug("destination attempt failed; retrying", "route", rt.Name, "attempt", attempt, "changes", len(again), "err", again[0].last.Err)
		if err := sleep(ctx, r.backoff(attempt, wait)); err != nil {
			return err
		}
		pending = again
	}
}

// attempt makes one attempt for every pending item, in batches of the
// route's BatchSize with up to Concurrency in flight, each paced by the
// route's limits, and returns the items that failed.
func (r *Runner) attempt(ctx context.Context, rt *Route, pending []*item) []*item {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []*item
	for start := 0; start < len(pending); start += rt.BatchSize {
		batch := pending[start:min(start+rt.BatchSize, len(pending))]
		wg.Go(func() {
			fails := r.deliverBatch(ctx, rt, batch)
			mu.Lock()
			defer mu.Unlock()
			for _, f := range fails {
				if f.Index < 0 || f.Index >= len(batch) {
					continue
				}
				it := batch[f.Index]
				if f.Err == nil {
					f.Err = errors.New("failed")
				}
				it.last = f
				failed = append(failed, it)
			}
		})
	}
	wg.Wait()
	return failed
}

// deliverBatch waits for the route's rate limits, then calls its sink
// once, under the route's timeout.
func (r *Runner) deliverBatch(ctx context.Context, rt *Route, batch []*item) []Failure {
	if rt.requests != nil {
		if err := rt.requests.Wait(ctx); err != nil {
			return failAll(len(batch), Failure{Err: err, Retryable: true})
		}
	}
	if rt.records != nil {
		if err := rt.records.WaitN(ctx, len(batch)); err != nil {
			return failAll(len(batch), Failure{Err: err, Retryable: true})
		}
	}
	changes := make([]Change, len(batch))
	for i, it := range batch {
		changes[i] = it.change
	}
	actx, cancel := context.WithTimeout(ctx, rt.Timeout)
	defer cancel()
	start := time.Now()
	fails := rt.Sink.Deliver(actx, changes)
	// A batch is of one partition, so of one kind.
	kind := changes[0].Kind
	deliverySeconds.WithLabelValues(rt.Name, kind).Observe(time.Since(start).Seconds())
	if n := len(batch) - countDistinct(fails, len(batch)); n > 0 {
		deliveredTotal.WithLabelValues(rt.Name, kind).Add(float64(n))
	}
	return fails
}

// countDistinct counts the distinct valid indexes in fails.
func countDistinct(fails []Failure, n int) int {
	seen := make(map[int]bool, len(fails))
	for _, f := range fails {
		if f.Index >= 0 && f.Index < n {
			seen[f.Index] = true
		}
	}
	return len(seen)
}

// deadLetter writes it to the dead-letter topic. rt is nil for a record
// no route could read.
func (r *Runner) deadLetter(ctx context.Context, cl *kgo.Client, rt *Route, it *item, reason string, attempts int) error {
	dl := DeadLetter{
		Reason: reason, Kind: it.change.Kind, Segment: it.change.Segment, ChangeID: it.change.ID,
		Error: it.last.Err.Error(), Status: it.last.Status, Attempts: attempts,
		First: it.first.UTC(), Dead: time.Now().UTC(),
		Topic: it.rec.Topic, Partition: it.rec.Partition, Offset: it.rec.Offset, Record: it.rec.Value,
	}
	if it.change.Trait != nil {
		dl.Trait = it.change.Trait.Trait
	}
	if !json.Valid(it.rec.Value) {
		dl.Record, dl.Value = nil, it.rec.Value
	}
	name := r.opts.Name
	if rt != nil {
		dl.Destination, dl.Type, dl.URL = rt.Name, rt.Type, rt.Target
		name = rt.Name
	} else {
		dl.Destination = r.opts.Name
	}
	v, err := dl.Encode()
	if err != nil {
		return err
	}
	// The dead letter must not die with a stopping ctx: it is what lets
	// the offset be committed.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(pctx, &kgo.Record{Topic: r.opts.DeadTopic, Key: it.rec.Key, Value: v}).FirstErr(); err != nil {
		return fmt.Errorf("cannot write dead letter to %s: %w", r.opts.DeadTopic, err)
	}
	deadLettersTotal.WithLabelValues(name, dl.Kind, reason).Inc()
	r.log.Warn("change dead-lettered", "route", name, "reason", reason, "kind", dl.Kind, "segment", dl.Segment, "trait", dl.Trait, "change_id", dl.ChangeID, "attempts", attempts, "err", dl.Error)
	return nil
}

// backoff is the wait before retry n (1-based): BaseBackoff doubled per
// retry, capped, with "equal jitter" (half fixed, half random) so many
// failing deliveries do not retry in step. A receiver's Retry-After wins
// when it asks for longer, up to MaxBackoff.
func (r *Runner) backoff(n int, retryAfter time.Duration) time.Duration {
	d := r.opts.BaseBackoff << min(n-1, 30)
	if d <= 0 || d > r.opts.MaxBackoff {
		d = r.opts.MaxBackoff
	}
	d = d/2 + rand.N(d/2+1)
	if retryAfter > d {
		d = min(retryAfter, r.opts.MaxBackoff)
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
