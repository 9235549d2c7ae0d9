package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/vfs"
	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/rfm"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Options tune a Processor. The zero value is ready to use: New fills
// what is unset with EnsureDefaults.
type Options struct {
	// Log receives the processor's log lines, overriding the default slog.Default().
	Log *slog.Logger
	// Now is the clock, overriding the default time.Now. Tests move it to
	// fire timers.
	Now func() time.Time
	// MaxPollRecords bounds the records taken in one poll (one batch per
	// partition), overriding the default 100000.
	MaxPollRecords int
	// TimerChunk bounds the entities recomputed in one timer transaction,
	// and those of one RFM re-score chunk (which also stops at about
	// 10 ms, rescoreBudget), overriding the default 5000.
	TimerChunk int
	// RescoreBudget is about how long one RFM re-score chunk holds the
	// task's work lock, its commit included; default rescoreBudget (10 ms).
	// Tests that count chunks set it long, so TimerChunk alone cuts them.
	RescoreBudget time.Duration
	// SessionTimeout of the consumer group member, overriding the default
	// kafka.GroupSessionTimeout: how long a crashed processor holds its
	// partitions.
	SessionTimeout time.Duration
	// KafkaOpts are added to every client the processor builds.
	KafkaOpts []kgo.Opt
	// MemTableSize is the Pebble memtable of each partition's state, in
	// bytes, overriding the default 32 MiB. It bounds the disk of the
	// state's write-ahead log too: Pebble preallocates each WAL file at
	// 110% of it and keeps up to six (the live ones and those it recycles),
	// so about 6.6 times this a partition. pulse dev sets 4 MiB.
	MemTableSize int

	// hook, in tests, runs at the named points of the commit path; an error
	// makes the task fail there as if it crashed.
	hook func(point string, partition int32) error
	// fs, in tests, is the tasks' file system (errorfs for disk faults).
	fs vfs.FS
	// commitGap, in tests, overrides commitGap.
	commitGap time.Duration
}

// EnsureDefaults sets every unset (zero or negative) option to its
// default, as documented on the field, and returns o.
func (o *Options) EnsureDefaults() *Options {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxPollRecords <= 0 {
		o.MaxPollRecords = 100000
	}
	if o.TimerChunk <= 0 {
		o.TimerChunk = 5000
	}
	if o.RescoreBudget <= 0 {
		o.RescoreBudget = rescoreBudget
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = kafka.GroupSessionTimeout
	}
	if o.MemTableSize <= 0 {
		o.MemTableSize = 32 << 20
	}
	if o.commitGap <= 0 {
		o.commitGap = commitGap
	}
	return o
}

// Processor is the stream processor: one consumer group member running a
// task per assigned partition. Build it with New and run it with Run.
type Processor struct {
	cfg   *config.Config
	store featurestore.Store
	opts  Options
	log   *slog.Logger

	features *aggregate.Set
	segments *segment.Set
	// names are the vector's features: the configured ones
	// (featureNames, in Values order), then the traits and RFM's.
	names        []string
	featureNames []string
	// recordFeatures encodes the names' values for segment records.
	recordFeatures *segment.Features
	// traits and rfm are the automatic features (traits.go, rfm.go);
	// rfmLatest is the newest boundaries version known (rfm_topic.go).
	traits    []trait
	rfm       *rfmSpec
	rfmLatest atomic.Pointer[rfm.Boundaries]
	rfmTopic  rfmState
	// rescoreSem bounds the re-score chunks running at once, across
	// tasks (rescoreSlots).
	rescoreSem  chan struct{}
	rescoreOnce sync.Once
	// records decodes the input records: of their maps, only the keys
	// the features read.
	records *event.Projection
	// idopts are the identity rules (cfg.Identity).
	idopts identity.Options

	cl *kgo.Client

	// mu guards tasks, reopen and wake.
	mu    sync.Mutex
	tasks map[int32]*task
	// reopen lists partitions whose task failed and must be opened again
	// by the poll loop.
	reopen map[int32]bool

	ready atomic.Pointer[error]
	// linkerRead counts the identity topic's links the linker read back
	// at its opens (pulse_identity_restored_links_total, per processor).
	linkerRead atomic.Int64
	// reopening is why a failed task cannot open again (a full disk, the
	// store or Kafka away), while reopenTask retries; nil otherwise.
	reopening atomic.Pointer[error]

	// runCtx is Run's context, which a fatal task error cancels; fatal
	// holds that error for Run to return.
	runCtx    context.Context
	cancelRun context.CancelFunc
	fatal     atomic.Pointer[error]
	// wake, under mu, cuts the poll in progress short, so the loop
	// reopens a failed task at once.
	wake context.CancelFunc
	// progress tells the committer that a task wrote a batch.
	progress chan struct{}
}

// errKill, returned by a test hook, stops Run at once as a crash would.
var errKill = errors.New("killed by test hook")

// entity is the only entity type the stream computes today; features of
// other entities are reported by New and skipped.
const entity = aggregate.DefaultEntity

// New compiles the features and segments of cfg. store receives the
// vectors; it is not closed by the Processor.
func New(cfg *config.Config, store featurestore.Store, opts Options) (*Processor, error) {
	opts.EnsureDefaults()
	sets, err := aggregate.CompileAll(cfg.Features, aggregate.Options{AllowedLateness: cfg.Stream.AllowedLateness.D()})
	if err != nil {
		return nil, fmt.Errorf("cannot compile features: %w", err)
	}
	set := sets[entity]
	if set == nil {
		set, err = aggregate.Compile(nil, aggregate.Options{AllowedLateness: cfg.Stream.AllowedLateness.D()})
		if err != nil {
			return nil, fmt.Errorf("cannot compile features: %w", err)
		}
	}
	for e := range sets {
		if e != entity {
			opts.Log.Warn("stream computes user features only; skipping features of another entity", "entity", e)
		}
	}
	kinds := make([]segment.Kind, len(set.Kinds()))
	for i, k := range set.Kinds() {
		kinds[i] = segmentKind(k)
	}
	traits, err := compileTraits(cfg, set.Names())
	if err != nil {
		return nil, err
	}
	names, kinds := withAuto(cfg, set.Names(), kinds)
	segs, err := segment.Compile(segment.ForEntity(cfg.Segments, entity), names, kinds)
	if err != nil {
		return nil, fmt.Errorf("cannot compile segments: %w", err)
	}
	reads, all := set.Reads()
	if cfg.Identity.On() {
		reads = append(slices.Clone(reads), cfg.Identity.TraitIdentifiers...) // the linker's
	}
	p := &Processor{
		cfg: cfg, store: store, opts: opts, log: opts.Log,
		features: set, segments: segs, names: names, featureNames: set.Names(), recordFeatures: segment.NewFeatures(names), records: event.NewProjection(reads, all),
		idopts: identity.FromConfig(cfg.Identity),
		traits: traits, rfm: compileRFM(cfg, set.Names()),
		tasks: map[int32]*task{}, reopen: map[int32]bool{},
		progress: make(chan struct{}, 1),
	}
	p.setReady(errors.New("not joined to the consumer group yet"))
	return p, nil
}

func segmentKind(k aggregate.Kind) segment.Kind {
	switch k {
	case aggregate.Number:
		return segment.Number
	case aggregate.String:
		return segment.String
	case aggregate.List:
		return segment.List
	}
	return segment.Any
}

func (p *Processor) setReady(err error) { p.ready.Store(&err) }

// Ready is nil once the processor has joined its group and every assigned
// partition is restored, while no failed partition is failing to open
// again; else it says what it is waiting for.
func (p *Processor) Ready() error {
	if err := p.reopening.Load(); err != nil {
		return *err
	}
	return *p.ready.Load()
}

// Run consumes until ctx ends or a fatal error. Cancelling ctx stops it
// cleanly: the batch in progress finishes, the tasks close and the member
// leaves the group.
func (p *Processor) Run(ctx context.Context) error {
	ctx, p.cancelRun = context.WithCancel(ctx)
	defer p.cancelRun()
	p.runCtx = ctx
	events := p.cfg.Kafka.Topics.Events
	opts := append([]kgo.Opt{
		kgo.ConsumerGroup(p.cfg.Stream.Group),
		kgo.ConsumeTopics(events),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(p.opts.SessionTimeout),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(64 << 20),
		kgo.FetchMaxPartitionBytes(32 << 20),
		kgo.OnPartitionsAssigned(p.assigned),
		kgo.OnPartitionsRevoked(p.revoked),
		kgo.OnPartitionsLost(p.revoked),
		kgo.AdjustFetchOffsetsFn(p.adjust),
	}, p.opts.KafkaOpts...)
	cl, err := kafka.NewClient(p.cfg.Kafka, opts...)
	if err != nil {
		return err
	}
	p.cl = cl
	defer func() {
		p.closeTasks(false)
		p.closeRFM() // after the tasks: their timers publish on it
		// A poll that returned blocks rebalances until allowed; leaving
		// the group on Close is a rebalance, so allow it or Close waits forever.
		cl.AllowRebalance()
		cl.Close()
	}()
	if p.cfg.Kafka.CreateTopics == nil || *p.cfg.Kafka.CreateTopics {
		if err := kafka.EnsureTopics(ctx, cl, p.cfg.Kafka); err != nil {
			return err
		}
	}
	if err := p.checkPartitions(ctx); err != nil {
		return err
	}
	if err := p.startRFM(ctx); err != nil {
		return err
	}
	p.log.Info("stream processor started", "group", p.cfg.Stream.Group, "topic", events, "store_write", p.cfg.Stream.StoreWrite, "commit_interval", p.cfg.Stream.CommitInterval.D())
	committerDone := make(chan struct{})
	defer func() { p.cancelRun(); <-committerDone }() // before the client closes
	go func() { defer close(committerDone); p.committer(ctx) }()
	for {
		pctx, woken := context.WithCancel(ctx)
		p.mu.Lock()
		p.wake = woken
		if len(p.reopen) > 0 {
			woken()
		}
		p.mu.Unlock()
		fetches := cl.PollRecords(pctx, p.opts.MaxPollRecords)
		p.mu.Lock()
		p.wake = nil
		p.mu.Unlock()
		woken()
		if ctx.Err() != nil || fetches.IsClientClosed() {
			break
		}
		fetches.EachError(func(t string, part int32, err error) {
			if !errors.Is(err, context.Canceled) {
				p.log.Warn("fetch error", "topic", t, "partition", part, "err", err)
			}
		})
		if err := p.process(ctx, fetches); err != nil {
			return err
		}
		cl.AllowRebalance()
	}
	if err := p.fatal.Load(); err != nil {
		return *err
	}
	return nil
}

// workCtx is the context of the tasks' batches.
func (p *Processor) workCtx() context.Context {
	if p.runCtx == nil {
		return context.Background()
	}
	return p.runCtx
}

// taskFailed is called by a task's worker when a batch failed: the task is
// reopened from its state by the poll loop, or, for a test's kill, the
// processor stops.
func (p *Processor) taskFailed(t *task, err error) {
	if errors.Is(err, errKill) {
		p.fatal.CompareAndSwap(nil, &err)
		p.cancelRun()
		return
	}
	if p.workCtx().Err() != nil {
		return // stopping
	}
	p.log.Error("stream task failed; reopening it from its state", "partition", t.partition, "err", err)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tasks[t.partition] == t {
		p.reopen[t.partition] = true
		p.wakeLocked()
	}
}

// wakeLocked cuts the poll in progress short; p.mu is held.
func (p *Processor) wakeLocked() {
	if p.wake != nil {
		p.wake()
	}
}

// checkPartitions refuses to start when the changelog has fewer
// partitions than the events topic: partition p's state goes to changelog
// partition p.
func (p *Processor) checkPartitions(ctx context.Context) error {
	tp := p.cfg.Kafka.Topics
	td, err := kadm.NewClient(p.cl).ListTopics(ctx, tp.Events, tp.State)
	if err != nil {
		return fmt.Errorf("cannot describe topics: %w", err)
	}
	ev, st := td[tp.Events], td[tp.State]
	if ev.Err != nil || st.Err != nil {
		return fmt.Errorf("cannot describe topics %s, %s: %w", tp.Events, tp.State, errors.Join(ev.Err, st.Err))
	}
	if len(st.Partitions) < len(ev.Partitions) {
		return fmt.Errorf("changelog topic %s has %d partitions, fewer than the %d of %s: give it as many",
			tp.State, len(st.Partitions), len(ev.Partitions), tp.Events)
	}
	if !p.cfg.Identity.On() {
		return nil
	}
	// The resolved topic is keyed like the events: partition p must be
	// the task of events partition p's, so the counts must be equal.
	rd, err := kadm.NewClient(p.cl).ListTopics(ctx, tp.Resolved)
	if err != nil {
		return fmt.Errorf("cannot describe topics: %w", err)
	}
	if r := rd[tp.Resolved]; r.Err != nil {
		return fmt.Errorf("cannot describe topic %s: %w", tp.Resolved, r.Err)
	} else if len(r.Partitions) != len(ev.Partitions) {
		return fmt.Errorf("identity: topic %s has %d partitions, %s has %d: give them as many (it is keyed like the events)",
			tp.Resolved, len(r.Partitions), tp.Events, len(ev.Partitions))
	}
	return nil
}

// process queues each partition's records for its task and returns: the
// tasks work while the loop fetches on.
func (p *Processor) process(ctx context.Context, fetches kgo.Fetches) error {
	p.mu.Lock()
	reopen := p.reopen
	p.reopen = map[int32]bool{}
	p.mu.Unlock()
	for part := range reopen {
		if err := p.reopenTask(ctx, part); err != nil {
			return err
		}
	}
	type work struct {
		t *task
		w taskWork
	}
	var works []work
	p.mu.Lock()
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) == 0 || reopen[fp.Partition] {
			return // nothing, or fetched before the reopened task's seek
		}
		t := p.tasks[fp.Partition]
		if t == nil || t.failed {
			return // revoked while fetched, or waiting to be reopened
		}
		works = append(works, work{t, taskWork{fp.Records, fp.HighWatermark}})
	})
	p.mu.Unlock()
	for _, w := range works {
		w.t.enqueue(ctx, w.w)
	}
	return nil
}

// committer commits the consumer group offsets the tasks reached, after
// the batches they write, until ctx ends. Best effort, for lag in standard
// tools: the truth is in Pebble and the changelog. It commits at most once
// every commitGap (each commit is a write to __consumer_offsets on the
// broker: at one per batch, the small batches of a steady 10k events/s
// made a fifth of the broker's CPU), and once more as it stops.
// A commit the group refuses (during a rebalance: REBALANCE_IN_PROGRESS, a
// stale generation) is tried again after commitRetry, so that an offset
// reached just before a rebalance, on a partition that then gets no more
// records, is not left uncommitted: its lag would stay up in every tool
// until more came.
func (p *Processor) committer(ctx context.Context) {
	committed := map[int32]int64{}
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			// The batches written since the last commit.
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			p.commitOffsets(stopCtx, committed)
			cancel()
			return
		case <-p.progress:
		case <-retry:
		}
		retry = nil
		made, failed := p.commitOffsets(ctx, committed)
		if failed > 0 {
			mCommitRetries.Add(float64(failed))
			retry = time.After(commitRetry)
		}
		if !made {
			continue
		}
		select {
		case <-time.After(p.opts.commitGap):
		case <-ctx.Done():
		}
	}
}

// commitOffsets commits the offsets the tasks reached that differ from
// committed's, and records them there. made is false when there was
// nothing to commit; failed is how many partitions' commits failed (those
// are dropped from committed, to be made again).
func (p *Processor) commitOffsets(ctx context.Context, committed map[int32]int64) (made bool, failed int) {
	commit := map[int32]kgo.EpochOffset{}
	p.mu.Lock()
	for part, t := range p.tasks {
		if o := t.written.Load(); !t.failed && o != committed[part] {
			commit[part] = kgo.EpochOffset{Epoch: -1, Offset: o}
			committed[part] = o
		}
	}
	p.mu.Unlock()
	if len(commit) == 0 {
		return false, 0
	}
	done := make(chan struct{})
	var refused []int32
	p.cl.CommitOffsets(ctx, map[string]map[int32]kgo.EpochOffset{p.cfg.Kafka.Topics.Events: commit},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			defer close(done)
			if err != nil {
				for part := range commit {
					refused = append(refused, part)
				}
				return
			}
			for _, t := range resp.Topics {
				for _, r := range t.Partitions {
					if r.ErrorCode != 0 {
						refused = append(refused, r.Partition)
					}
				}
			}
		})
	select {
	case <-done:
	case <-ctx.Done():
		// Not known to be made: the commit as the committer stops
		// makes it again.
		for part := range commit {
			delete(committed, part)
		}
		return true, 0
	}
	for _, part := range refused {
		delete(committed, part)
	}
	return true, len(refused)
}

// commitGap is the least time between two of the committer's commits:
// lag tools read the group's offsets at most that much behind. Kafka
// Streams commits its offsets every 100 ms under exactly-once too
// (commit.interval.ms).
const commitGap = 100 * time.Millisecond

// commitRetry is how long the committer waits before it commits again the
// offsets the group refused.
const commitRetry = time.Second

// reopenTask closes a failed task and opens it again from its Pebble state
// and the changelog, then points the consumer at its next offset.
func (p *Processor) reopenTask(ctx context.Context, part int32) error {
	p.mu.Lock()
	old := p.tasks[part]
	delete(p.tasks, part)
	p.mu.Unlock()
	if old == nil {
		return nil // revoked meanwhile
	}
	old.close()
	for attempt := 0; ; attempt++ {
		t, err := p.openTask(ctx, part)
		if err == nil {
			p.reopening.Store(nil)
			p.mu.Lock()
			p.tasks[part] = t
			p.mu.Unlock()
			p.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{
				p.cfg.Kafka.Topics.Events: {part: {Epoch: -1, Offset: t.next()}},
			})
			p.signalProgress()
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		p.log.Error("cannot open stream task; retrying", "partition", part, "err", err, "attempt", attempt+1)
		why := fmt.Errorf("partition %d cannot open again: %w", part, err)
		p.reopening.Store(&why)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(min(time.Duration(attempt+1)*time.Second, 10*time.Second)):
		}
	}
}

// assigned opens (and restores) a task per new partition before fetching
// starts; adjust then seeks each to the task's next offset.
func (p *Processor) assigned(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
	parts := assigned[p.cfg.Kafka.Topics.Events]
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	var wg sync.WaitGroup
	for _, part := range parts {
		p.mu.Lock()
		_, have := p.tasks[part]
		p.mu.Unlock()
		if have {
			continue
		}
		p.setReady(fmt.Errorf("restoring partition %d", part))
		wg.Go(func() {
			t, err := p.openTask(ctx, part)
			p.mu.Lock()
			defer p.mu.Unlock()
			if err != nil {
				if ctx.Err() == nil {
					p.log.Error("cannot open stream task; will retry", "partition", part, "err", err)
				}
				p.tasks[part] = &task{p: p, partition: part, failed: true}
				p.reopen[part] = true
				return
			}
			p.tasks[part] = t
		})
	}
	wg.Wait()
	p.setReady(nil)
}

// signalProgress wakes the committer.
func (p *Processor) signalProgress() {
	select {
	case p.progress <- struct{}{}:
	default: // the committer has a signal pending
	}
}

func (p *Processor) adjust(_ context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for part := range offsets[p.cfg.Kafka.Topics.Events] {
		if t := p.tasks[part]; t != nil && !t.failed {
			offsets[p.cfg.Kafka.Topics.Events][part] = kgo.NewOffset().At(t.next()).WithEpoch(-1)
		}
	}
	// The opened tasks' offsets are committed now, not at their first
	// batch: the member that had a partition may not have committed its
	// last offset (revoked before the committer's turn, or killed), and a
	// partition that gets no more records would keep its lag up. Now,
	// once the group's offsets are fetched, and not in assigned: franz-go
	// keeps the session's offsets from that fetch, and a commit answered
	// before it only logs that the session "has ended".
	p.signalProgress()
	return offsets, nil
}

func (p *Processor) revoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	for _, part := range revoked[p.cfg.Kafka.Topics.Events] {
		p.mu.Lock()
		t := p.tasks[part]
		delete(p.tasks, part)
		delete(p.reopen, part)
		p.mu.Unlock()
		if t != nil {
			t.close()
			mLag.DeleteLabelValues(strconv.Itoa(int(part)))
			p.log.Info("partition revoked", "partition", part)
		}
	}
}

// closeTasks closes every task.
func (p *Processor) closeTasks(_ bool) {
	p.mu.Lock()
	tasks := p.tasks
	p.tasks = map[int32]*task{}
	p.mu.Unlock()
	for _, t := range tasks {
		t.close()
	}
}

// Partitions lists the partitions this processor owns now, for tests and status.
func (p *Processor) Partitions() []int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int32
	for part, t := range p.tasks {
		if !t.failed {
			out = append(out, part)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
