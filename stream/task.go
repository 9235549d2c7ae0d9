package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"github.com/cockroachdb/pebble/vfs"
	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/diskfault"
	"github.com/pulse-rt/pulse/internal/keyfilter"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// task owns one input partition: its Pebble state, its transactional
// producer and its timer loop. processBatch, the timer loop and resets
// take work, so at most one of them changes the state at a time.
type task struct {
	p         *Processor
	partition int32
	topic     string
	log       *slog.Logger
	failed    bool // placeholder of a task that could not be opened

	db *pebble.DB
	// fault is db's first disk fault: a commit that reports one fails
	// the task, which is reopened (from its state and the changelog) once
	// the disk takes writes again.
	fault *diskfault.Fault
	// synced is when a commit last synced db's WAL, under work.
	synced time.Time
	prod   *kgo.Client
	// out is where commits go: prod, or the tester's memory.
	out partitionLog

	// work serialises the batches, the timer and resets; mu guards meta
	// for readers of next. waiting counts the batches waiting for work:
	// a re-score lets them go first (rescoreFor).
	work    sync.Mutex
	waiting atomic.Int32
	mu      sync.Mutex
	meta    meta
	vals    []any
	// scratch is finish's encoding buffer.
	scratch []byte
	// recordFeatures is finish's scratch for the features of segment
	// records.
	recordFeatures []byte
	// evs and items are processBatch's chunk of decoded records (see
	// batch.go); sink keeps its prefetches.
	evs   *[applyChunk]event.Event
	items []pendingEvent
	sink  int64
	// auto is the traits' and RFM's per-task state (auto.go).
	auto
	// cache keeps decoded entities across batches, as committed or in the
	// open transaction (a task whose work or commit fails is thrown away
	// with its cache). Bounded by cacheEntities.
	cache    map[string]*entry
	lagLabel string
	// seen filters the dedupe lookups; see keyfilter.
	seen *keyfilter.Filter
	// act is each feature fingerprint's activation offset (see seed.go);
	// seeds reads the partition's seeds. Both used under work.
	act   map[uint64]int64
	seeds *kgo.Client
	// resolvedIn reads the partition's resolved records (identity.go);
	// linker runs beside the task of partition 0 (linker.go). Both nil
	// with identity resolution off.
	resolvedIn *kgo.Client
	linker     *linker
	// moved filters the pointer lookups of resolve (identity.go).
	moved *keyfilter.Filter
	// forgot filters the entities deleted on request whose marker
	// (pkForgot) may remain: identity on only; nil while there is none.
	forgot *keyfilter.Filter
	// resolvedDone is closed when the resolved loop ends (nil: none).
	resolvedDone chan struct{}
	// resolvedPend holds the resolved records fetched and not applied
	// yet, in offset order: the resolved loop applies them, unless a
	// batch that takes the work lock first carries them (rideResolved).
	resolvedMu   sync.Mutex
	resolvedPend []*kgo.Record

	// open is the input batch's transaction kept open for the fetches
	// that follow (stream.commit_interval, processTxn), its Pebble batch
	// indexed: reader reads through it. Only the worker keeps one open,
	// and it holds the work lock until the transaction commits, so no
	// other path (timers, resolved records, seeds, re-scores) ever meets
	// one.
	open *txn

	// written is the input offset whose vectors are in the store: for lag
	// and the consumer group commit.
	written atomic.Int64

	// lastMark, under work, is the mark this task last set in a Marked
	// store (a changelog offset its writes vouch for), -1 while unknown;
	// storeLost counts the writes that found the store's mark below it
	// since the last rewrite: the store lost writes, and the timer loop
	// writes every entity again (rewriteAll).
	lastMark  int64
	storeLost atomic.Int64
	// recent, under work, is the task's last store writes (their marks
	// and entities, recentIDs of them at most maxRecentIDs): a loss back
	// to a mark they reach is repaired by writing their entities again
	// (rewriteIDs) instead of the whole partition (rewriteFull).
	recent      []recentWrite
	recentIDs   int
	rewriteIDs  map[string]struct{}
	rewriteFull bool
	markName    string // the task's mark in the store: stream:<topic>:<partition>

	stop chan struct{}
	done chan struct{}

	// queue feeds the worker the partition's fetched batches in offset
	// order, so the poll loop fetches on while the tasks work, each at its
	// own pace. broken makes the worker drop what is queued: after a
	// failure (the task is reopened from its state) or on close.
	queue chan taskWork
	quit  chan struct{} // closed by close
	// nudge asks the worker to commit the transaction it keeps open now,
	// not when its interval is up: the resolved loop waits for the work
	// lock with a merge's records (nudgeWorker).
	nudge      chan struct{}
	workerDone chan struct{}
	broken     atomic.Bool
	// workFailed, set when a batch, a timer, seeds, resolved records or
	// a re-score failed under the work lock, or a commit failed, makes
	// commit refuse every later one until the task is reopened (see
	// commit and failOnError). A clean close does not set it: the batch
	// in progress still commits.
	workFailed atomic.Bool
}

// taskWork is one fetched batch of the task's partition.
type taskWork struct {
	recs []*kgo.Record
	hwm  int64
}

// queueDepth bounds the batches waiting for a task: the poll loop blocks
// (and stops fetching) when a task is that far behind.
const queueDepth = 2

// entry is one entity loaded for a batch.
type entry struct {
	id      string
	st      *aggregate.State
	m       segment.Membership // as stored
	due     int64              // stored timer, 0 = none
	cause   string             // what changed it last (timer, reload), for segment change ids
	offset  int64              // else the input offset of the last event applied
	touched bool               // an event was applied in this batch
	at      time.Time          // event time of that cause
	eventAt time.Time          // newest receivedAt folded in this batch
	// autoRec is the entity's automatic record as committed, once
	// autoLoaded; legacyAuto: read from r/<id>, where it still is
	// (dropLegacyAuto).
	autoRec    autoRecord
	autoLoaded bool
	legacyAuto bool
	// rfmSearch is rfmDue's last search of the entity, kept while it is
	// cached.
	rfmSearch rfmLastSearch
}

func (p *Processor) taskDir(part int32) string {
	return filepath.Join(p.cfg.DataDir, "stream", fmt.Sprintf("%s-%d", p.cfg.Kafka.Topics.Events, part))
}

// openTask opens the partition's Pebble database and producer, brings the
// state up to date with the changelog and starts the timer loop.
func (p *Processor) openTask(ctx context.Context, part int32) (_ *task, err error) {
	t := p.newTask(part)
	mRestoring.WithLabelValues(t.lagLabel).Set(1)
	defer mRestoring.WithLabelValues(t.lagLabel).Set(0)
	start := time.Now()
	t.db, t.fault, err = openPebble(p.taskDir(part), p.opts.fs, p.log.With("partition", part), p.opts.MemTableSize)
	if err != nil {
		return nil, fmt.Errorf("cannot open stream state of partition %d: %w", part, err)
	}
	defer func() {
		if err != nil {
			t.closeClients()
		}
	}()
	state := p.cfg.Kafka.Topics.State
	t.prod, err = kafka.NewClient(p.cfg.Kafka, append(append(kafka.ProducerOpts(),
		kgo.TransactionalID(fmt.Sprintf("pulse-stream-%s-%d", t.topic, part)),
		kgo.TransactionTimeout(60*time.Second),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.BasicConsistentPartitioner(func(topic string) func(*kgo.Record, int) int {
			if topic == state {
				return func(r *kgo.Record, _ int) int { return int(r.Partition) }
			}
			if topic == p.cfg.Kafka.Topics.IdentityRequests {
				return func(*kgo.Record, int) int { return 0 } // one fold order
			}
			if topic == p.cfg.Kafka.Topics.Activations {
				// One producer per activations partition: its last record
				// is then right before the last commit marker.
				return func(r *kgo.Record, n int) int { return int(r.Partition) % n }
			}
			tp := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
			return func(r *kgo.Record, n int) int { return tp.Partition(r, n) }
		})),
	), p.opts.KafkaOpts...)...)
	if err != nil {
		return nil, err
	}
	t.out = kafkaLog{Client: t.prod, topic: t.topic, partition: part}
	if err := t.recover(ctx); err != nil {
		return nil, err
	}
	if t.seen, err = buildSeenFilter(t.db); err != nil {
		return nil, err
	}
	if err := t.activate(ctx); err != nil {
		return nil, err
	}
	if err := t.openSeeds(); err != nil {
		return nil, err
	}
	if err := t.openResolved(); err != nil {
		return nil, err
	}
	if err := t.openMoved(); err != nil {
		return nil, err
	}
	t.written.Store(t.meta.next)
	t.log.Info("partition ready", "next_offset", t.meta.next, "took", time.Since(start).Round(time.Millisecond))
	t.queue = make(chan taskWork, queueDepth)
	t.quit = make(chan struct{})
	t.nudge = make(chan struct{}, 1)
	t.workerDone = make(chan struct{})
	go t.worker()
	go t.timerLoop()
	if t.resolvedIn != nil {
		t.resolvedDone = make(chan struct{})
		go t.resolvedLoop()
	}
	if part == 0 && t.identityOn() {
		t.linker = p.startLinker()
	}
	return t, nil
}

// newTask is a task of partition part with nothing open yet.
func (p *Processor) newTask(part int32) *task {
	return &task{
		p: p, partition: part, topic: p.cfg.Kafka.Topics.Events,
		log:      p.log.With("partition", part),
		lagLabel: strconv.Itoa(int(part)),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		cache:    map[string]*entry{},
		lastMark: -1,
		markName: "stream:" + p.cfg.Kafka.Topics.Events + ":" + strconv.Itoa(int(part)),
	}
}

// openPebble opens a task's Pebble database in dir of fs (nil: the disk).
// Pebble's fatal errors (a write the disk refused) are recorded on the
// Fault rather than panic: commit through it.
func openPebble(dir string, fs vfs.FS, log *slog.Logger, memTable int) (*pebble.DB, *diskfault.Fault, error) {
	o := &pebble.Options{FS: fs}
	cache := pebble.NewCache(64 << 20)
	defer cache.Unref() // the DB holds its own reference
	o.Cache = cache
	o.Levels = make([]pebble.LevelOptions, 7)
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		o.Levels[i].Compression = pebble.NoCompression
	}
	o.MemTableSize = uint64(memTable)
	fault := diskfault.Watch(o, log, "stream")
	db, err := pebble.Open(dir, o)
	if err == nil {
		if err = fault.Err(); err != nil {
			db.Close()
			db = nil
		}
	}
	return db, fault, err
}

// syncEvery is how often a task's commit syncs its WAL.
const syncEvery = time.Second

// next is the next input offset to process.
func (t *task) next() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.meta.next
}

// close lets the batch in progress finish, drops the queued ones, stops
// the timer loop and closes the clients. It does not commit anything: what
// is not committed is redone from the state.
func (t *task) close() {
	if t.failed {
		return
	}
	if t.linker != nil {
		t.linker.close()
	}
	t.broken.Store(true)
	close(t.quit)
	<-t.workerDone
	close(t.stop)
	<-t.done
	if t.resolvedDone != nil {
		<-t.resolvedDone
	}
	t.closeClients()
}

// enqueue hands the worker a batch, waiting while its queue is full; the
// batch is dropped if the task closes meanwhile.
func (t *task) enqueue(ctx context.Context, w taskWork) {
	select {
	case t.queue <- w:
	case <-t.workerDone:
	case <-ctx.Done():
	}
}

// worker processes the queued batches until close. After a failure it
// drops the rest: the task is reopened from its state and the consumer
// seeks back to where the state ends. A transaction kept open
// (stream.commit_interval) commits when its interval is up and no fetch
// came to close it, or at once when the resolved loop nudges the worker;
// at close it is dropped, as a crash would drop it.
func (t *task) worker() {
	defer close(t.workerDone)
	var due *time.Timer
	for {
		var w taskWork
		var fire <-chan time.Time
		if t.open != nil {
			d := time.Until(t.open.openAt.Add(t.p.cfg.Stream.CommitInterval.D()))
			if due == nil {
				due = time.NewTimer(d)
			} else {
				due.Reset(d)
			}
			fire = due.C
		}
		select {
		case <-t.quit:
			t.dropOpen()
			return
		case w = <-t.queue:
		case <-t.nudge:
			t.commitKept()
			continue
		case <-fire:
			t.commitKept()
			continue
		}
		if due != nil {
			due.Stop()
		}
		if t.broken.Load() {
			t.dropOpen()
			continue
		}
		w = t.fold(w)
		if err := t.processBatch(t.p.workCtx(), w.recs, w.hwm); err != nil {
			t.broken.Store(true)
			t.p.taskFailed(t, err)
			continue
		}
		if t.open == nil {
			t.p.signalProgress()
		}
	}
}

// commitKept commits the transaction the worker keeps open, if any (its
// interval is up, or the worker was nudged); a failure fails the task.
func (t *task) commitKept() {
	if t.open == nil {
		return
	}
	if err := t.commitOpenUnlock(t.p.workCtx()); err != nil {
		t.broken.Store(true)
		t.p.taskFailed(t, err)
		return
	}
	t.p.signalProgress()
}

// nudgeWorker asks the worker to commit a transaction it keeps open at
// once (a no-op when none is open, or a nudge is pending).
func (t *task) nudgeWorker() {
	select {
	case t.nudge <- struct{}{}:
	default:
	}
}

// commitOpenUnlock commits the transaction the worker kept open, with
// the resolved records pending (rideOpen), and releases the work lock it
// held for it.
func (t *task) commitOpenUnlock(ctx context.Context) (err error) {
	defer t.work.Unlock()
	defer t.failOnError(&err)
	rode, err := t.rideOpen(t.open)
	if err != nil {
		t.open.abort()
		t.open = nil
		return err
	}
	forwarded := t.open.counts.resolvedForwarded
	if err := t.commitOpen(ctx); err != nil {
		return err
	}
	if rode {
		mForwarded.Add(float64(forwarded))
		return t.afterResolved()
	}
	return nil
}

// dropOpen drops the transaction the worker kept open, if any, and
// releases the work lock: nothing of it was committed, and the task's
// in-memory entities hold its changes, so the task must not commit again
// before it is reopened (close, or a failure).
func (t *task) dropOpen() {
	if t.open == nil {
		return
	}
	t.open.abort()
	t.open = nil
	t.workFailed.Store(true)
	t.work.Unlock()
}

// reader is what the task reads its local state from: the open
// transaction's indexed batch while one is open (the batch path sees what
// the transaction's earlier fetches wrote), else the database.
func (t *task) reader() pebble.Reader {
	if t.open != nil {
		return t.open.b
	}
	return t.db
}

// fold appends to w the batches queued behind it (the poll loop fetched
// them while the task committed), up to MaxPollRecords: what waited is
// processed and committed in one transaction, not one each, so under load
// a partition pays one commit for it and its events wait for one.
func (t *task) fold(w taskWork) taskWork {
	for len(w.recs) < t.p.opts.MaxPollRecords {
		select {
		case next := <-t.queue:
			// A new slice: a fetch's records may share their array.
			recs := make([]*kgo.Record, 0, len(w.recs)+len(next.recs))
			w = taskWork{recs: append(append(recs, w.recs...), next.recs...), hwm: next.hwm}
			continue
		default:
		}
		break
	}
	return w
}

func (t *task) closeClients() {
	if t.resolvedIn != nil {
		t.resolvedIn.Close()
	}
	if t.seeds != nil {
		t.seeds.Close()
	}
	if t.prod != nil {
		t.prod.Close()
	}
	if t.db != nil && !t.fault.Wedged() {
		t.db.Close()
	}
}

func (t *task) hook(point string) error {
	if t.p.opts.hook == nil {
		return nil
	}
	return t.p.opts.hook(point, t.partition)
}

// recover brings the task up to date: reset detection, changelog catch-up
// (or full restore), segment rule changes, and the store write of the last
// transaction's entities.
func (t *task) recover(ctx context.Context) error {
	has := false
	if b, closer, err := t.reader().Get(pkMeta); err == nil {
		t.meta, err = decodeMeta(b)
		closer.Close()
		if err != nil {
			return err
		}
		has = true
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return err
	} else {
		t.meta = meta{changelog: -1}
	}
	if has {
		dropped, err := t.dropIfStale(ctx)
		if err != nil {
			return err
		}
		has = !dropped
	}
	end, err := t.endOffset(ctx)
	if err != nil {
		return err
	}
	input, err := t.inputID(ctx)
	if err != nil {
		return err
	}
	if has && t.inputReset(end, input) {
		t.log.Warn("input log was reset (stored offset beyond its end, or the state of another topic of the same name): dropping local state and resynchronising",
			"topic", t.topic, "stored_offset", t.meta.next, "end_offset", end, "stored_topic_id", t.meta.input, "topic_id", input)
		mResets.Inc()
		if err := t.clearLocal(); err != nil {
			return err
		}
		has = false
	}
	if err := t.restore(ctx, has); err != nil {
		return err
	}
	if t.inputReset(end, input) {
		t.log.Warn("input log was reset (changelog offset beyond its end, or the changelog of another topic of the same name): dropping the partition's state and resynchronising from the start",
			"topic", t.topic, "changelog_offset", t.meta.next, "end_offset", end, "changelog_topic_id", t.meta.input, "topic_id", input)
		mResets.Inc()
		if err := t.wipe(ctx); err != nil {
			return err
		}
	}
	if fp := t.p.segments.Fingerprint(); t.meta.segFP != fp {
		if err := t.scheduleAll(fp); err != nil {
			return err
		}
	}
	if err := t.syncRFM(); err != nil {
		return err
	}
	t.lastMark = t.meta.storeMark - 1
	if _, closer, err := t.reader().Get(pkStoreRewrite); err == nil {
		closer.Close()
		t.storeLost.Add(1) // found before a crash, not done yet
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return err
	}
	if err := t.rewritePending(ctx); err != nil {
		return err
	}
	if t.meta.input != input {
		// The input topic's id, in the changelog and the local state: a
		// topic made again under the same name is then told apart, even
		// past the old one's offsets.
		x := t.newTxn()
		x.recs = append(x.recs, t.stateRecord([]byte(clInputKey), []byte(input)))
		t.meta.input = input
		if err := t.commit(ctx, x, t.meta.next); err != nil {
			t.meta.input = ""
			return err
		}
	}
	return nil
}

// inputReset reports whether the state (local, or restored from the
// changelog) is not of the input log there is now: its offset is past the
// log's end, or it names another topic id (a topic made again under the
// same name, whose log may be past the old offsets).
func (t *task) inputReset(end int64, input string) bool {
	return t.meta.next > end || (t.meta.input != "" && t.meta.input != input)
}

// inputID is the input topic's id.
func (t *task) inputID(ctx context.Context) (string, error) {
	td, err := kadm.NewClient(t.prod).ListTopics(ctx, t.topic)
	if err == nil {
		err = td[t.topic].Err
	}
	if err != nil {
		return "", fmt.Errorf("cannot describe %s: %w", t.topic, err)
	}
	return td[t.topic].ID.String(), nil
}

// dropIfStale clears a local state older than the changelog keeps its
// tombstones, so that the restore reads the whole changelog instead of its
// tail. The broker removes a tombstone, with the record it deleted, from
// delete.retention.ms after compacting it (a day by default): a state
// last brought up to date before that (a partition that comes back to a
// processor after longer, a disk restored from a backup) may hold an
// entity deleted since, a person deleted on request among them, which no
// record of the tail would remove. Every tombstone written after the
// state's last commit is still there for at least delete.retention.ms
// after it; the state is trusted for half of that, the rest a margin for
// the clocks of the broker and this machine. A state of a build that did
// not keep its age (meta.asOf 0) is trusted, as before.
func (t *task) dropIfStale(ctx context.Context) (bool, error) {
	if t.meta.asOf == 0 {
		return false, nil
	}
	keep := kafka.DeleteRetentionOrDefault(ctx, t.prod, t.p.cfg.Kafka.Topics.State, t.log)
	age := t.p.opts.Now().Sub(time.UnixMilli(t.meta.asOf))
	if age < keep/2 {
		return false, nil
	}
	t.log.Warn("local state is older than the changelog keeps tombstones: restoring the partition from the whole changelog",
		"age", age.Round(time.Second), "delete_retention", keep)
	mStaleStates.Inc()
	return true, t.clearLocal()
}

func (t *task) endOffset(ctx context.Context) (int64, error) {
	ends, err := kadm.NewClient(t.prod).ListEndOffsets(ctx, t.topic)
	if err != nil {
		return 0, fmt.Errorf("cannot list end offsets of %s: %w", t.topic, err)
	}
	o, ok := ends.Lookup(t.topic, t.partition)
	if !ok {
		return 0, fmt.Errorf("no end offset for %s/%d", t.topic, t.partition)
	}
	if o.Err != nil {
		return 0, fmt.Errorf("cannot list end offset of %s/%d: %w", t.topic, t.partition, o.Err)
	}
	return o.Offset, nil
}

// clearLocal deletes every key of the local state.
func (t *task) clearLocal() error {
	if err := t.fault.Do(func() error { return t.db.DeleteRange([]byte{0}, []byte{0xff}, pebble.Sync) }); err != nil {
		return err
	}
	t.meta = meta{changelog: -1, segFP: t.meta.segFP, seedNext: t.meta.seedNext, resolvedNext: t.meta.resolvedNext}
	t.act = map[uint64]int64{}
	return nil
}

// scheduleAll puts every stored entity on the timer index as due now, so
// the timer loop re-evaluates them against changed segment rules.
func (t *task) scheduleAll(fp uint64) error {
	it, err := t.reader().NewIter(&pebble.IterOptions{LowerBound: pkEntity, UpperBound: prefixEnd(pkEntity)})
	if err != nil {
		return err
	}
	b := t.db.NewBatch()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		b.Set(timerKey(0, string(it.Key()[len(pkEntity):])), nil, nil)
		n++
	}
	if err := it.Close(); err != nil {
		return err
	}
	t.meta.segFP = fp
	b.Set(pkMeta, t.meta.encode(), nil)
	if n > 0 {
		t.log.Info("segment rules changed: re-evaluating stored entities in the background", "entities", n)
	}
	return t.fault.Commit(b, pebble.NoSync)
}

// rewritePending writes the vectors of the last transaction's entities to
// the store again: the crash may have come before that write.
func (t *task) rewritePending(ctx context.Context) error {
	if len(t.meta.pending) == 0 {
		return nil
	}
	return t.rewrite(ctx, t.meta.pending)
}

// rewrite writes the vectors of ids, as their state is now, to the store
// with their whole membership: every segment they are in entered, every
// other left, whatever the store held.
func (t *task) rewrite(ctx context.Context, ids []string) error {
	now := t.p.opts.Now()
	var ups []featurestore.Update
	for _, id := range ids {
		e, err := t.load(id)
		if err != nil {
			return err
		}
		t.vals = t.p.features.Values(e.st, now, t.vals)
		if t.vals, err = t.appendAuto(nil, e, t.vals, now); err != nil {
			return err
		}
		m := t.p.segments.Eval(t.vals, now, nil)
		v := t.vector(id, t.vals, m, now, time.Time{})
		if t.identityOn() {
			if v.CanonicalID, err = t.userOf(id, nil); err != nil {
				return err
			}
			if v.CanonicalID == id {
				v.CanonicalID = "" // not merged
			}
		}
		// Idempotent: members enter, others exit, whatever was written.
		u := featurestore.Update{Vector: v, Enter: v.Segments}
		if e.st.Empty() && v.CanonicalID == "" {
			// A deleted entity (its marker, identity.go) must not come
			// back as an empty vector: its vector is deleted again.
			if deleted, err := t.has(key(pkForgot, id)); err != nil {
				return err
			} else if deleted {
				u.Delete, u.Enter, u.Exit = true, nil, t.p.segments.Names()
				ups = append(ups, u)
				continue
			}
		}
		for _, name := range t.p.segments.Names() {
			if !slices.Contains(v.Segments, name) {
				u.Exit = append(u.Exit, name)
			}
		}
		ups = append(ups, u)
	}
	return t.storeWrite(ctx, ups, t.meta.changelog)
}

// storeWrite writes ups to the store. A Marked store (Redis) also takes
// mark, the changelog offset the write vouches for, and answers the mark
// it held: one below the mark this task last set means the store lost
// writes since (a failover to a replica that had not received them, a
// restart from an older snapshot, a FLUSHALL). Vectors would heal at their
// entities' next change, but member lists, kept by the changes the stream
// tells the store, would not: the task then writes every entity again
// (storeLost, rewriteAll).
func (t *task) storeWrite(ctx context.Context, ups []featurestore.Update, mark int64) error {
	ms, ok := t.p.store.(featurestore.Marked)
	if !ok {
		return t.p.store.Write(ctx, ups)
	}
	prev, found, err := ms.WriteMarked(ctx, ups, t.markName, mark)
	if err != nil {
		return err
	}
	if t.lastMark >= 0 && (!found || prev < t.lastMark) {
		held := "none"
		if found {
			held = strconv.FormatInt(prev, 10)
		}
		what := "every entity of the partition"
		if ids, ok := t.writtenSince(prev, found); ok && !t.rewriteFull {
			if t.rewriteIDs == nil {
				t.rewriteIDs = map[string]struct{}{}
			}
			for _, id := range ids {
				t.rewriteIDs[id] = struct{}{}
			}
			what = strconv.Itoa(len(t.rewriteIDs)) + " entities written since the store's mark"
		} else {
			t.rewriteFull, t.rewriteIDs = true, nil
		}
		t.log.Warn("the online store lost writes (its mark is behind the last one this partition set): writing them again",
			"store_mark", held, "last_mark", t.lastMark, "rewrite", what)
		mStoreLost.Inc()
		// Kept in the state, so a crash before the rewrite ends does not
		// forget it.
		if err := t.fault.Do(func() error { return t.db.Set(pkStoreRewrite, nil, pebble.Sync) }); err != nil {
			return err
		}
		t.storeLost.Add(1)
	}
	t.lastMark = max(t.lastMark, mark)
	t.remember(mark, ups)
	return nil
}

// recentWrite is one of a task's store writes: the mark it set and the
// entities it wrote.
type recentWrite struct {
	mark int64
	ids  []string
}

// maxRecentIDs bounds the entities task.recent holds (a few MB a task,
// the ids kept alive included; 26 s of a partition at 2,500 events/s): a
// loss older than what it reaches makes the task write the whole
// partition again.
const maxRecentIDs = 1 << 16

// remember records a store write in task.recent, forgetting the oldest
// past maxRecentIDs.
func (t *task) remember(mark int64, ups []featurestore.Update) {
	ids := make([]string, len(ups))
	for i, u := range ups {
		ids[i] = u.Vector.ID
	}
	t.recent = append(t.recent, recentWrite{mark, ids})
	t.recentIDs += len(ids)
	drop := 0
	for t.recentIDs > maxRecentIDs && drop < len(t.recent) {
		t.recentIDs -= len(t.recent[drop].ids)
		drop++
	}
	if drop > 0 {
		t.recent = slices.Delete(t.recent, 0, drop)
	}
}

// writtenSince returns the entities of the task's store writes that a
// store holding mark prev may have lost: every write with a mark from
// prev on (the mark is set last in each write, and several writes set the
// same mark, so the one that left prev may be any of them). ok is false
// when the store held no mark, or task.recent does not reach back past
// prev: then any write may be lost.
func (t *task) writtenSince(prev int64, found bool) (ids []string, ok bool) {
	if !found || len(t.recent) == 0 || t.recent[0].mark >= prev {
		return nil, false
	}
	for _, w := range t.recent {
		if w.mark >= prev {
			ids = append(ids, w.ids...)
		}
	}
	return ids, true
}

// rewriteAll writes the entities a store that lost writes may have lost
// (storeLost) to it again, with their whole membership: those of the
// task's recent writes since the store's mark (rewriteIDs), else every
// entity of the partition and every merged id's pointer. It goes a chunk
// of TimerChunk ids at a time, each under the work lock, so batches go on
// between them; a loss found again meanwhile starts it again, and a write
// that fails leaves it to be started again over the whole partition.
func (t *task) rewriteAll(ctx context.Context) error {
	found := t.storeLost.Load()
	t.work.Lock()
	var ids []string
	var err error
	if t.rewriteFull || t.rewriteIDs == nil {
		// A loss past what task.recent reaches, or a rewrite found due
		// at the task's open.
		ids, err = t.storedIDs()
	} else {
		ids = slices.Sorted(maps.Keys(t.rewriteIDs))
	}
	t.rewriteFull, t.rewriteIDs = false, nil
	t.work.Unlock()
	if err != nil {
		return err
	}
	start := time.Now()
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), t.p.opts.TimerChunk)]
		ids = ids[len(chunk):]
		t.work.Lock()
		err := t.rewrite(ctx, chunk)
		t.work.Unlock()
		if err != nil {
			return err
		}
		mStoreRewritten.Add(float64(len(chunk)))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	t.work.Lock()
	defer t.work.Unlock()
	if !t.storeLost.CompareAndSwap(found, 0) {
		return nil // lost again meanwhile: once more, from the start
	}
	if err := t.fault.Do(func() error { return t.db.Delete(pkStoreRewrite, pebble.Sync) }); err != nil {
		return err
	}
	t.log.Info("online store rewritten after lost writes", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// storedIDs lists the ids of the partition's stored entities and of the
// merged ids that point to another.
func (t *task) storedIDs() ([]string, error) {
	var ids []string
	for _, prefix := range [][]byte{pkEntity, pkAlias} {
		it, err := t.reader().NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
		if err != nil {
			return nil, err
		}
		for it.First(); it.Valid(); it.Next() {
			ids = append(ids, string(it.Key()[len(prefix):]))
		}
		if err := it.Close(); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// cacheEntities bounds a task's entity cache.
const cacheEntities = 100_000

// load returns an entity's state, or a new one.
func (t *task) load(id string) (*entry, error) {
	if e := t.cache[id]; e != nil {
		e.cause, e.at, e.eventAt, e.touched = "", time.Time{}, time.Time{}, false
		return e, nil
	}
	if len(t.cache) >= cacheEntities {
		n := 0
		for k := range t.cache { // drop about half, at random
			if n++; n%2 == 0 {
				delete(t.cache, k)
			}
		}
	}
	b, closer, err := t.reader().Get(key(pkEntity, id))
	if errors.Is(err, pebble.ErrNotFound) {
		// An entity with no state has no automatic record either (it is
		// part of the value; a record kept apart is deleted with the
		// entity): no read of r/<id> for a newcomer.
		e := &entry{id: id, st: t.p.features.NewState(), autoLoaded: true}
		t.cache[id] = e
		return e, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	e, err := t.decodeEntry(id, b)
	if err != nil {
		return nil, err
	}
	t.cache[id] = e
	return e, nil
}

// decodeEntry is the entity id whose stored local value is b.
func (t *task) decodeEntry(id string, b []byte) (*entry, error) {
	e := &entry{id: id}
	due, cl, err := splitLocalValue(b)
	if err != nil {
		return nil, err
	}
	e.due = due
	state, memb, auto, err := splitEntityValue(cl)
	if err != nil {
		return nil, err
	}
	if e.st, err = t.p.features.DecodeState(state); err != nil {
		return nil, fmt.Errorf("entity %q: %w", id, err)
	}
	if auto != nil && t.p.hasAuto() {
		if e.autoRec, err = decodeAutoRecord(auto); err != nil {
			return nil, fmt.Errorf("entity %q: %w", id, err)
		}
		e.autoLoaded = true
	}
	// A stale membership (rules changed) is diffed against anyway: every
	// touch evaluates the entity again.
	e.m, _, _ = t.p.segments.DecodeMembership(memb, nil)
	return e, nil
}

// vector is the store's view of an entity.
func (t *task) vector(id string, vals []any, m segment.Membership, now, eventAt time.Time) featurestore.Vector {
	feats := make(map[string]any, len(vals))
	for i, n := range t.p.names {
		feats[n] = vals[i]
	}
	members := t.p.segments.Members(m)
	sort.Strings(members)
	return featurestore.Vector{Entity: entity, ID: id, Features: feats, Segments: members, UpdatedAt: now, EventAt: eventAt}
}

// finish computes an entity's new vector and segments and adds its
// changelog record, segment changes, Pebble writes and store update to x.
//
// Old tiles are dropped (Expire) only when a timer fires: a timer is due
// whenever a tile leaves a window, so that bounds memory without paying
// for Expire on every event.
func (t *task) finish(x *txn, e *entry, now time.Time, expire bool) error {
	p := t.p
	if expire {
		p.features.Expire(e.st, now)
	}
	t.vals = p.features.Values(e.st, now, t.vals)
	var err error
	if t.vals, err = t.appendAuto(x, e, t.vals, now); err != nil {
		return err
	}
	m := p.segments.Eval(t.vals, now, nil)
	changes := p.segments.Diff(e.m, m, nil)
	v := t.vector(e.id, t.vals, m, now, e.eventAt)
	u := featurestore.Update{Vector: v}
	// The changes' records share one encoding of the features (a group
	// change is an exit and an enter).
	feats, encoded := t.recordFeatures[:0], false
	if len(changes) > 0 {
		feats, encoded = p.recordFeatures.Append(feats, t.vals)
		t.recordFeatures = feats
	}
	for _, c := range changes {
		cause := e.cause
		if cause == "" {
			cause = t.topic + "/" + strconv.Itoa(int(t.partition)) + "/" + strconv.FormatInt(e.offset, 10)
		}
		rec := segment.NewRecord(c, entity, e.id, e.at, cause, v.Features)
		var b []byte
		if encoded {
			b, err = rec.EncodeWith(feats)
		} else {
			b, err = rec.Encode() // the error of a value with no JSON form
		}
		if err != nil {
			return err
		}
		x.recs = append(x.recs, &kgo.Record{Topic: p.cfg.Kafka.Topics.Segments, Key: []byte(e.id), Value: b})
		if c.Enter {
			u.Enter = append(u.Enter, c.Segment)
			x.segEnter++
		} else {
			u.Exit = append(u.Exit, c.Segment)
			x.segExit++
		}
	}
	var due int64
	if at, ok := p.features.NextChange(e.st, now); ok {
		due = at.UnixMilli()
	}
	due = t.rfmDue(e, t.vals, now, due)
	ek := key(pkEntity, e.id)
	clKey := []byte(clEntityPrefix + e.id)
	t.dropLegacyAuto(x, e)
	if e.st.Empty() && m.Count() == 0 {
		due = 0
		x.recs = append(x.recs, t.stateRecord(clKey, nil))
		x.b.Delete(ek, nil)
		delete(t.cache, e.id)
	} else {
		t.scratch = e.st.AppendBinary(t.scratch[:0])
		n := len(t.scratch)
		t.scratch = p.segments.AppendMembership(t.scratch, m)
		cl := entityValue(make([]byte, 0, binary.MaxVarintLen64+len(t.scratch)+64), t.scratch[:n], t.scratch[n:])
		if p.hasAuto() {
			cl = e.autoRec.appendTo(append(cl, autoMark))
		}
		x.recs = append(x.recs, t.stateRecord(clKey, cl))
		// The local value (due, changelog value) is written straight
		// into the batch: no copy of it to build.
		op := x.b.SetDeferred(len(ek), 8+len(cl))
		copy(op.Key, ek)
		binary.BigEndian.PutUint64(op.Value, uint64(due))
		copy(op.Value[8:], cl)
		op.Finish()
	}
	if e.due != due {
		if e.due != 0 {
			x.b.Delete(timerKey(e.due, e.id), nil)
		}
		if due != 0 {
			x.b.Set(timerKey(due, e.id), nil, nil)
		}
	}
	x.updates = append(x.updates, u)
	x.pending = append(x.pending, e.id)
	e.m, e.due = m, due // what the commit stores
	return nil
}

func (t *task) stateRecord(k, v []byte) *kgo.Record {
	return &kgo.Record{Topic: t.p.cfg.Kafka.Topics.State, Partition: t.partition, Key: k, Value: v}
}

func (t *task) has(k []byte) (bool, error) {
	_, closer, err := t.reader().Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

// timerLoop recomputes due entities every timer interval.
func (t *task) timerLoop() {
	defer close(t.done)
	tick := time.NewTicker(t.p.cfg.Stream.TimerInterval.D())
	defer tick.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-t.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	rescoring := false
	for {
		// A re-score goes on without waiting for the tick; the tick's
		// work comes when it is due.
		due := true
		if rescoring {
			select {
			case <-t.stop:
				return
			case <-tick.C:
			default:
				due = false
			}
		} else {
			select {
			case <-t.stop:
				return
			case <-tick.C:
			}
		}
		if due && t.storeLost.Load() > 0 {
			// A rewrite the store refuses (Redis down again) is tried
			// at the next tick; the batches fail the same way and
			// reopen the task, which finds the rewrite still to do in
			// its state (pkStoreRewrite).
			if err := t.rewriteAll(ctx); err != nil && ctx.Err() == nil {
				t.log.Warn("cannot write the online store again yet; trying at the next tick", "err", err)
			}
		}
		var err error
		if due {
			err = t.pollSeeds(ctx)
			for more := err == nil; more; {
				more, err = t.fire(ctx)
			}
			if err == nil {
				rescoring, err = t.rfmTick(ctx)
			}
		} else {
			rescoring, err = t.rescoreFor(ctx, t.p.cfg.Stream.TimerInterval.D())
		}
		if err != nil {
			if errors.Is(err, errKill) {
				t.p.taskFailed(t, err)
				return
			}
			if errors.Is(err, errBroken) {
				return // whoever broke the task reopens or closes it
			}
			if ctx.Err() == nil {
				t.log.Error("timer failed; the task will be reopened", "err", err)
				t.p.mu.Lock()
				if t.p.tasks[t.partition] == t {
					t.p.reopen[t.partition] = true
					t.p.wakeLocked()
				}
				t.p.mu.Unlock()
			}
			return
		}
	}
}

// fire recomputes up to TimerChunk due entities and purges expired seen
// ids, in a transaction of its own. more reports that more were due.
// A partition that is receiving events rarely gets here with anything
// due: each batch fires what is due first (processTxn, batchTimers).
func (t *task) fire(ctx context.Context) (more bool, err error) {
	t.work.Lock()
	defer t.work.Unlock()
	defer t.failOnError(&err)
	p := t.p
	now := p.opts.Now()
	x := t.newTxn()
	defer x.abort()
	purged, err := t.purgeSeen(x, now.UnixMilli()-p.cfg.Stream.AllowedLateness.D().Milliseconds())
	if err != nil {
		return false, err
	}
	n, more, err := t.fireDue(x, now, p.opts.TimerChunk)
	if err != nil || (n == 0 && !purged) {
		return false, err
	}
	return more, t.commit(ctx, x, t.meta.next)
}

// fireDue recomputes, into x, up to limit entities whose timer is due at
// now: each is finished as of now with its timer as the cause, and kept in
// x.touched (untouched), so events of the same transaction applied after
// it find the entry as the timer left it. n is how many fired; more
// reports that more were due.
func (t *task) fireDue(x *txn, now time.Time, limit int) (n int, more bool, err error) {
	p := t.p
	it, err := t.reader().NewIter(&pebble.IterOptions{LowerBound: pkTimer, UpperBound: timerKey(now.UnixMilli()+1, "")})
	if err != nil {
		return 0, false, err
	}
	type due struct {
		at int64
		id string
	}
	var dues []due
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[len(pkTimer):]
		if len(k) < 8 {
			continue
		}
		if len(dues) == limit {
			more = true
			break
		}
		dues = append(dues, due{int64(beUint64(k)), string(k[8:])})
	}
	if err := it.Close(); err != nil {
		return 0, false, err
	}
	for _, d := range dues {
		x.b.Delete(timerKey(d.at, d.id), nil)
		if x.touched.byID[d.id] != nil {
			continue // two timers of one entity: the first fired it
		}
		e, err := x.touched.get(t, d.id)
		if err != nil {
			return 0, false, err
		}
		if e.due == d.at {
			e.due = 0 // this key is deleted above
		}
		if d.at == 0 {
			e.cause, e.at = "reload/"+strconv.FormatUint(p.segments.Fingerprint(), 16), now
		} else {
			e.cause, e.at = "timer/"+d.id+"/"+strconv.FormatInt(d.at, 10), time.UnixMilli(d.at).UTC()
		}
		if err := t.finish(x, e, now, true); err != nil {
			return 0, false, err
		}
		e.cause, e.at = "", time.Time{} // events after it name their own
		x.timerFire++
		n++
	}
	return n, more, nil
}

func beUint64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// purgeSeen forgets the message ids of batches seen before horizon, part
// by part (each part's changelog key gets its tombstone).
func (t *task) purgeSeen(x *txn, horizon int64) (bool, error) {
	it, err := t.reader().NewIter(&pebble.IterOptions{LowerBound: pkBatch, UpperBound: prefixEnd(pkBatch)})
	if err != nil {
		return false, err
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid() && n < 100; it.Next() {
		// The time leads the value: read it alone, since most ticks find
		// the oldest batch still within the horizon.
		if ms, k := binary.Varint(it.Value()); k > 0 && ms >= horizon {
			break
		}
		sb, err := decodeSeenBatch(it.Value())
		if err != nil {
			return false, err
		}
		if sb.seenMs >= horizon {
			break
		}
		for _, id := range sb.ids {
			x.b.Delete(key(pkSeen, id), nil)
		}
		off, part, ok := splitSeenKey(it.Key()[len(pkBatch):])
		if !ok {
			return false, errCorrupt
		}
		x.b.Delete(append([]byte(nil), it.Key()...), nil)
		x.recs = append(x.recs, t.stateRecord([]byte(seenChangelogKey(off, part)), nil))
		n++
	}
	return n > 0, nil
}
