package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// task owns one input partition: its Pebble state, its transactional
// producer and its timer loop. processBatch and the timer loop take mu, so
// at most one of them changes the state at a time.
type task struct {
	p         *Processor
	partition int32
	topic     string
	log       *slog.Logger
	failed    bool // placeholder of a task that could not be opened

	db   *pebble.DB
	prod *kgo.Client

	// work serialises the batches, the timer and resets; mu guards meta
	// for readers of next.
	work sync.Mutex
	mu   sync.Mutex
	meta meta
	vals []any
	// scratch is finish's encoding buffer.
	scratch []byte
	// evs and items are processBatch's chunk of decoded records; sink
	// keeps its prefetches.
	evs   *[applyChunk]event.Event
	items []pendingEvent
	sink  int64
	// cache keeps decoded entities across batches, as committed (a task
	// whose commit fails is thrown away with its cache). Bounded by
	// cacheEntities.
	cache    map[string]*entry
	lagLabel string
	// seen filters the dedupe lookups; see seenFilter.
	seen *seenFilter
	// act is each feature fingerprint's activation offset (see seed.go);
	// seeds reads the partition's seeds. Both used under work.
	act   map[uint64]int64
	seeds *kgo.Client

	// written is the input offset whose vectors are in the store: for lag
	// and the consumer group commit.
	written atomic.Int64

	stop chan struct{}
	done chan struct{}

	// queue feeds the worker the partition's fetched batches in offset
	// order, so the poll loop fetches on while the tasks work, each at its
	// own pace. broken makes the worker drop what is queued: after a
	// failure (the task is reopened from its state) or on close.
	queue      chan taskWork
	quit       chan struct{} // closed by close
	workerDone chan struct{}
	broken     atomic.Bool
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
}

// txn is what one commit writes: changelog, segment and dead-letter
// records, the Pebble batch and the store updates.
type txn struct {
	recs      []*kgo.Record
	b         *pebble.Batch
	updates   []featurestore.Update
	pending   []string
	received  []int64 // receivedAt (ms) of the events applied, for freshness
	segEnter  int
	segExit   int
	timerFire int
}

func (p *Processor) taskDir(part int32) string {
	return filepath.Join(p.cfg.DataDir, "stream", fmt.Sprintf("%s-%d", p.cfg.Kafka.Topics.Events, part))
}

// openTask opens the partition's Pebble database and producer, brings the
// state up to date with the changelog and starts the timer loop.
func (p *Processor) openTask(ctx context.Context, part int32) (_ *task, err error) {
	label := strconv.Itoa(int(part))
	mRestoring.WithLabelValues(label).Set(1)
	defer mRestoring.WithLabelValues(label).Set(0)
	t := &task{
		p: p, partition: part, topic: p.cfg.Kafka.Topics.Events,
		log:      p.log.With("partition", part),
		lagLabel: label,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	start := time.Now()
	t.db, err = openPebble(p.taskDir(part))
	t.cache = map[string]*entry{}
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
	t.written.Store(t.meta.next)
	t.log.Info("partition ready", "next_offset", t.meta.next, "took", time.Since(start).Round(time.Millisecond))
	t.queue = make(chan taskWork, queueDepth)
	t.quit = make(chan struct{})
	t.workerDone = make(chan struct{})
	go t.worker()
	go t.timerLoop()
	return t, nil
}

func openPebble(dir string) (*pebble.DB, error) {
	o := &pebble.Options{}
	cache := pebble.NewCache(64 << 20)
	defer cache.Unref() // the DB holds its own reference
	o.Cache = cache
	o.Levels = make([]pebble.LevelOptions, 7)
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		o.Levels[i].Compression = pebble.NoCompression
	}
	o.MemTableSize = 32 << 20
	o.Logger = quietLogger{}
	return pebble.Open(dir, o)
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)         {}
func (quietLogger) Errorf(f string, a ...any)    { slog.Error("pebble: " + fmt.Sprintf(f, a...)) }
func (quietLogger) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }

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
	t.broken.Store(true)
	close(t.quit)
	<-t.workerDone
	close(t.stop)
	<-t.done
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
// seeks back to where the state ends.
func (t *task) worker() {
	defer close(t.workerDone)
	for {
		var w taskWork
		select {
		case <-t.quit:
			return
		case w = <-t.queue:
		}
		if t.broken.Load() {
			continue
		}
		if err := t.processBatch(t.p.workCtx(), w.recs, w.hwm); err != nil {
			t.broken.Store(true)
			t.p.taskFailed(t, err)
			continue
		}
		select {
		case t.p.progress <- struct{}{}:
		default: // the committer has a signal pending
		}
	}
}

func (t *task) closeClients() {
	if t.seeds != nil {
		t.seeds.Close()
	}
	if t.prod != nil {
		t.prod.Close()
	}
	if t.db != nil {
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
	if b, closer, err := t.db.Get(pkMeta); err == nil {
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
	end, err := t.endOffset(ctx)
	if err != nil {
		return err
	}
	if has && t.meta.next > end {
		t.log.Warn("input log was reset (stored offset beyond its end): dropping local state and resynchronising",
			"topic", t.topic, "stored_offset", t.meta.next, "end_offset", end)
		mResets.Inc()
		if err := t.clearLocal(); err != nil {
			return err
		}
		has = false
	}
	if err := t.restore(ctx, has); err != nil {
		return err
	}
	if t.meta.next > end {
		t.log.Warn("input log was reset (changelog offset beyond its end): dropping the partition's state and resynchronising from the start",
			"topic", t.topic, "changelog_offset", t.meta.next, "end_offset", end)
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
	return t.rewritePending(ctx)
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
	if err := t.db.DeleteRange([]byte{0}, []byte{0xff}, pebble.Sync); err != nil {
		return err
	}
	t.meta = meta{changelog: -1, segFP: t.meta.segFP, seedNext: t.meta.seedNext}
	t.act = map[uint64]int64{}
	return nil
}

// scheduleAll puts every stored entity on the timer index as due now, so
// the timer loop re-evaluates them against changed segment rules.
func (t *task) scheduleAll(fp uint64) error {
	it, err := t.db.NewIter(&pebble.IterOptions{LowerBound: pkEntity, UpperBound: prefixEnd(pkEntity)})
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
	return b.Commit(pebble.NoSync)
}

// rewritePending writes the vectors of the last transaction's entities to
// the store again: the crash may have come before that write.
func (t *task) rewritePending(ctx context.Context) error {
	if len(t.meta.pending) == 0 {
		return nil
	}
	now := t.p.opts.Now()
	var ups []featurestore.Update
	for _, id := range t.meta.pending {
		e, err := t.load(id)
		if err != nil {
			return err
		}
		t.vals = t.p.features.Values(e.st, now, t.vals)
		m := t.p.segments.Eval(t.vals, now, nil)
		v := t.vector(id, t.vals, m, now, time.Time{})
		// Idempotent: members enter, others exit, whatever was written.
		u := featurestore.Update{Vector: v, Enter: v.Segments}
		for _, name := range t.p.segments.Names() {
			if !slices.Contains(v.Segments, name) {
				u.Exit = append(u.Exit, name)
			}
		}
		ups = append(ups, u)
	}
	return t.p.store.Write(ctx, ups)
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
	e := &entry{id: id}
	b, closer, err := t.db.Get(key(pkEntity, id))
	if errors.Is(err, pebble.ErrNotFound) {
		e.st = t.p.features.NewState()
		t.cache[id] = e
		return e, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	due, cl, err := splitLocalValue(b)
	if err != nil {
		return nil, err
	}
	e.due = due
	state, memb, err := splitEntityValue(cl)
	if err != nil {
		return nil, err
	}
	if e.st, err = t.p.features.DecodeState(state); err != nil {
		return nil, fmt.Errorf("entity %q: %w", id, err)
	}
	// A stale membership (rules changed) is diffed against anyway: every
	// touch evaluates the entity again.
	e.m, _, _ = t.p.segments.DecodeMembership(memb, nil)
	t.cache[id] = e
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
	m := p.segments.Eval(t.vals, now, nil)
	changes := p.segments.Diff(e.m, m, nil)
	v := t.vector(e.id, t.vals, m, now, e.eventAt)
	u := featurestore.Update{Vector: v}
	for _, c := range changes {
		cause := e.cause
		if cause == "" {
			cause = t.topic + "/" + strconv.Itoa(int(t.partition)) + "/" + strconv.FormatInt(e.offset, 10)
		}
		rec := segment.NewRecord(c, entity, e.id, e.at, cause, v.Features)
		b, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("cannot encode segment change: %w", err)
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
	ek := key(pkEntity, e.id)
	clKey := []byte(clEntityPrefix + e.id)
	if e.st.Empty() && m.Count() == 0 {
		due = 0
		x.recs = append(x.recs, t.stateRecord(clKey, nil))
		x.b.Delete(ek, nil)
		delete(t.cache, e.id)
	} else {
		t.scratch = e.st.AppendBinary(t.scratch[:0])
		n := len(t.scratch)
		t.scratch = p.segments.AppendMembership(t.scratch, m)
		cl := entityValue(make([]byte, 0, binary.MaxVarintLen64+len(t.scratch)), t.scratch[:n], t.scratch[n:])
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

// commit writes x: the Kafka transaction, then the Pebble batch, then the
// store. next is the input offset the state reaches.
func (t *task) commit(ctx context.Context, x *txn, next int64) error {
	defer x.b.Close()
	off := t.stateRecord([]byte(clOffsetKey), offsetValue(next, x.pending))
	start := time.Now()
	if err := t.prod.BeginTransaction(); err != nil {
		return fmt.Errorf("cannot begin transaction: %w", err)
	}
	var failed kafka.Failures
	done := failed.Promise
	for _, r := range x.recs {
		t.prod.Produce(ctx, r, done)
	}
	t.prod.Produce(ctx, off, done)
	if err := t.prod.Flush(ctx); err != nil {
		return fmt.Errorf("cannot flush transaction: %w", err)
	}
	if err := failed.Err(); err != nil {
		return fmt.Errorf("cannot produce transaction: %w", err)
	}
	if err := t.hook("before-txn-commit"); err != nil {
		return err
	}
	if err := t.prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("cannot commit transaction: %w", err)
	}
	mTxnSeconds.Observe(time.Since(start).Seconds())
	if err := t.hook("after-txn-commit"); err != nil {
		return err
	}
	t.mu.Lock()
	t.meta.next, t.meta.changelog, t.meta.pending = next, off.Offset, x.pending
	x.b.Set(pkMeta, t.meta.encode(), nil)
	t.mu.Unlock()
	if err := x.b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("cannot commit stream state: %w", err)
	}
	if err := t.hook("after-pebble-commit"); err != nil {
		return err
	}
	if len(x.updates) > 0 {
		if err := t.p.store.Write(ctx, x.updates); err != nil {
			return fmt.Errorf("cannot write the online store: %w", err)
		}
		now := time.Now()
		for _, r := range x.received {
			mEventToStore.Observe(now.Sub(time.UnixMilli(r)).Seconds())
		}
	}
	if x.segEnter > 0 {
		mSegmentChanges.WithLabelValues(segment.ChangeEnter).Add(float64(x.segEnter))
	}
	if x.segExit > 0 {
		mSegmentChanges.WithLabelValues(segment.ChangeExit).Add(float64(x.segExit))
	}
	if x.timerFire > 0 {
		mTimerFires.Add(float64(x.timerFire))
	}
	t.written.Store(next)
	return t.hook("after-store-write")
}

// deadLetter is the value of a record on the invalid-events topic, the
// shape ingest uses, with the input position.
type deadLetter struct {
	Error      string          `json:"error"`
	Field      string          `json:"field,omitempty"`
	Reason     string          `json:"reason"` // invalid or late
	Source     string          `json:"source"`
	ReceivedAt time.Time       `json:"receivedAt"`
	MessageID  string          `json:"messageId,omitempty"`
	Topic      string          `json:"topic"`
	Partition  int32           `json:"partition"`
	Offset     int64           `json:"offset"`
	Event      json.RawMessage `json:"event"`
}

func (t *task) deadLetter(r *kgo.Record, reason, msgID string, err error, now time.Time) *kgo.Record {
	dl := deadLetter{Error: err.Error(), Reason: reason, Source: "stream", ReceivedAt: now.UTC(), MessageID: msgID,
		Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
	var fe *event.FieldError
	if errors.As(err, &fe) {
		dl.Field = fe.Field
	}
	if json.Valid(r.Value) {
		dl.Event = r.Value
	} else {
		q, _ := json.Marshal(string(r.Value))
		dl.Event = q
	}
	v, _ := json.Marshal(dl)
	return &kgo.Record{Topic: t.p.cfg.Kafka.Topics.Invalid, Key: r.Key, Value: v}
}

// processBatch folds one partition's fetched records into the state and
// commits them.
func (t *task) processBatch(ctx context.Context, recs []*kgo.Record, hwm int64) error {
	start := time.Now()
	t.work.Lock()
	defer t.work.Unlock()
	next := t.meta.next
	if first := recs[0].Offset; first < next && hwm < next {
		t.log.Warn("input log was reset (offsets went back): dropping the partition's state and resynchronising",
			"topic", t.topic, "expected_offset", next, "got_offset", first)
		mResets.Inc()
		if err := t.wipe(ctx); err != nil {
			return err
		}
	} else if first > next && next > 0 {
		t.log.Warn("input records skipped (retention deleted them before they were processed)", "from", next, "to", first)
	}
	// Records before next are in the state already (a fetch from before a
	// seek); skip them.
	for len(recs) > 0 && recs[0].Offset < t.meta.next {
		recs = recs[1:]
	}
	if len(recs) == 0 {
		return nil
	}
	p := t.p
	now := p.opts.Now()
	x := &txn{b: t.db.NewBatch()}
	var touched touchedSet
	batchSeen := map[string]struct{}{}
	aliases := map[string]string{}
	var applied, ignored, dups, late, invalid int
	if t.evs == nil {
		t.evs = new([applyChunk]event.Event)
	}
	// In chunks: the first pass decodes, dedupes and finds each record's
	// entity; the second applies them, each after prefetching the state of
	// the one prefetchAhead places on.
	for start := 0; start < len(recs); start += applyChunk {
		items := t.items[:0]
		for i, r := range recs[start:min(start+applyChunk, len(recs))] {
			ev := &t.evs[i] // reused, maps and all: Apply keeps no pointer into it
			if err := p.records.Unmarshal(r.Value, ev); err != nil {
				items = append(items, pendingEvent{r: r, err: err})
				continue
			}
			if ev.MessageID == "" {
				ev.MessageID = r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10)
			}
			if _, ok := batchSeen[ev.MessageID]; ok {
				dups++
				continue
			}
			// newOnly, for a duplicate of an event seen before some features
			// were activated, lists those features: they never counted it.
			var newOnly []uint64
			if !t.seen.mayHave(ev.MessageID) {
				// Never seen: no lookup.
			} else if seen, at, err := t.seenAt(ev.MessageID); err != nil {
				x.b.Close()
				return err
			} else if seen {
				dups++
				if newOnly = t.activatedAfter(at); len(newOnly) == 0 {
					continue
				}
			}
			if newOnly == nil {
				batchSeen[ev.MessageID] = struct{}{}
			}
			if newOnly == nil && ev.UserID != "" && (ev.Type == event.Identify || ev.Type == event.Alias) {
				for _, anon := range []string{ev.AnonymousID, ev.PreviousID} {
					if anon != "" && anon != ev.UserID {
						aliases[anon] = ev.UserID
					}
				}
			}
			id := ev.UserID
			if id == "" {
				var err error
				if id, err = t.resolve(ev.AnonymousID, aliases); err != nil {
					x.b.Close()
					return err
				}
			}
			e, err := touched.get(t, id)
			if err != nil {
				x.b.Close()
				return err
			}
			items = append(items, pendingEvent{r: r, ev: ev, e: e, newOnly: newOnly})
		}
		// Two steps, each a read that depends on nothing outstanding: the
		// State itself 2×prefetchAhead records on, then (its address known)
		// the slots and tiles Apply reads.
		for k := range min(2*prefetchAhead, len(items)) {
			t.prefetchState(&items[k])
		}
		for k := range min(prefetchAhead, len(items)) {
			t.prefetch(&items[k])
		}
		for k := range items {
			if k+2*prefetchAhead < len(items) {
				t.prefetchState(&items[k+2*prefetchAhead])
			}
			if k+prefetchAhead < len(items) {
				t.prefetch(&items[k+prefetchAhead])
			}
			it := &items[k]
			r, ev, e := it.r, it.ev, it.e
			if it.err != nil {
				x.recs = append(x.recs, t.deadLetter(r, "invalid", "", it.err, now))
				invalid++
				continue
			}
			var changed bool
			var err error
			if it.newOnly == nil {
				changed, err = p.features.Apply(e.st, ev)
			} else {
				changed, err = t.crossCut(x, e.id, e.st, ev, r, it.newOnly)
			}
			if errors.Is(err, aggregate.ErrTooLate) {
				x.recs = append(x.recs, t.deadLetter(r, "late", ev.MessageID, err, now))
				late++
				continue
			}
			if err != nil {
				x.recs = append(x.recs, t.deadLetter(r, "invalid", ev.MessageID, err, now))
				invalid++
				continue
			}
			if !changed {
				ignored++
				continue
			}
			applied++
			e.touched, e.offset, e.at = true, r.Offset, ev.Timestamp
			if ev.ReceivedAt.After(e.eventAt) {
				e.eventAt = ev.ReceivedAt
			}
			if !ev.ReceivedAt.IsZero() {
				x.received = append(x.received, ev.ReceivedAt.UnixMilli())
			}
		}
		clear(items) // keep no entry alive until the next batch
		t.items = items
	}
	x.updates = make([]featurestore.Update, 0, len(touched.order))
	x.pending = make([]string, 0, len(touched.order))
	x.recs = slices.Grow(x.recs, len(touched.order)+len(aliases)+2)
	for _, e := range touched.order {
		if !e.touched {
			continue // nothing applied: unchanged
		}
		if err := t.finish(x, e, now, false); err != nil {
			x.b.Close()
			return err
		}
	}
	last := recs[len(recs)-1].Offset
	if len(batchSeen) > 0 {
		sb := seenBatch{seenMs: now.UnixMilli(), ids: make([]string, 0, len(batchSeen))}
		for id := range batchSeen {
			sb.ids = append(sb.ids, id)
			// The value is the batch's last offset: a duplicate later
			// tells whether a feature activated since missed the original.
			op := x.b.SetDeferred(len(pkSeen)+len(id), 8)
			copy(op.Key[copy(op.Key, pkSeen):], id)
			binary.BigEndian.PutUint64(op.Value, uint64(last))
			op.Finish()
			t.seen.add(id)
		}
		v := sb.encode()
		x.b.Set(batchKey(last), v, nil)
		x.recs = append(x.recs, t.stateRecord([]byte(clSeenPrefix+strconv.FormatInt(last, 10)), v))
	}
	for anon, user := range aliases {
		x.b.Set(key(pkAlias, anon), []byte(user), nil)
		x.recs = append(x.recs, t.stateRecord([]byte(clAliasPrefix+anon), []byte(user)))
	}
	if err := t.commit(ctx, x, last+1); err != nil {
		return err
	}
	if t.seen.full() {
		f, err := buildSeenFilter(t.db)
		if err != nil {
			return err
		}
		t.seen = f
	}
	mEvents.WithLabelValues("applied").Add(float64(applied))
	mEvents.WithLabelValues("ignored").Add(float64(ignored))
	mEvents.WithLabelValues("duplicate").Add(float64(dups))
	mEvents.WithLabelValues("late").Add(float64(late))
	mEvents.WithLabelValues("invalid").Add(float64(invalid))
	mLag.WithLabelValues(t.lagLabel).Set(float64(max(0, hwm-last-1)))
	mBatch.Observe(time.Since(start).Seconds())
	mBatchSize.Observe(float64(len(recs)))
	return nil
}

func (t *task) has(k []byte) (bool, error) {
	_, closer, err := t.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

// resolve maps an anonymous id to the user it was identified as.
func (t *task) resolve(anon string, batch map[string]string) (string, error) {
	if u, ok := batch[anon]; ok {
		return u, nil
	}
	b, closer, err := t.db.Get(key(pkAlias, anon))
	if errors.Is(err, pebble.ErrNotFound) {
		return anon, nil
	}
	if err != nil {
		return "", err
	}
	defer closer.Close()
	return string(b), nil
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
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		err := t.pollSeeds(ctx)
		for more := err == nil; more; {
			more, err = t.fire(ctx)
		}
		if err != nil {
			if errors.Is(err, errKill) {
				t.p.taskFailed(t, err)
				return
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
// ids. more reports that more were due.
func (t *task) fire(ctx context.Context) (more bool, err error) {
	t.work.Lock()
	defer t.work.Unlock()
	p := t.p
	now := p.opts.Now()
	nowMs := now.UnixMilli()
	it, err := t.db.NewIter(&pebble.IterOptions{LowerBound: pkTimer, UpperBound: timerKey(nowMs+1, "")})
	if err != nil {
		return false, err
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
		if len(dues) == p.opts.TimerChunk {
			more = true
			break
		}
		dues = append(dues, due{int64(beUint64(k)), string(k[8:])})
	}
	if err := it.Close(); err != nil {
		return false, err
	}
	x := &txn{b: t.db.NewBatch()}
	purged, err := t.purgeSeen(x, nowMs-p.cfg.Stream.AllowedLateness.D().Milliseconds())
	if err != nil {
		x.b.Close()
		return false, err
	}
	if len(dues) == 0 && !purged {
		x.b.Close()
		return false, nil
	}
	done := map[string]bool{}
	for _, d := range dues {
		x.b.Delete(timerKey(d.at, d.id), nil)
		if done[d.id] {
			continue
		}
		done[d.id] = true
		e, err := t.load(d.id)
		if err != nil {
			x.b.Close()
			return false, err
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
			x.b.Close()
			return false, err
		}
		x.timerFire++
	}
	return more, t.commit(ctx, x, t.meta.next)
}

func beUint64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// purgeSeen forgets the message ids of batches seen before horizon.
func (t *task) purgeSeen(x *txn, horizon int64) (bool, error) {
	it, err := t.db.NewIter(&pebble.IterOptions{LowerBound: pkBatch, UpperBound: prefixEnd(pkBatch)})
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
		x.b.Delete(append([]byte(nil), it.Key()...), nil)
		off := int64(beUint64(it.Key()[len(pkBatch):]))
		x.recs = append(x.recs, t.stateRecord([]byte(clSeenPrefix+strconv.FormatInt(off, 10)), nil))
		n++
	}
	return n > 0, nil
}

// applyChunk is how many records processBatch decodes before applying
// them, and prefetchAhead how far ahead of Apply it prefetches states.
const (
	applyChunk    = 256
	prefetchAhead = 4
)

// pendingEvent is a decoded record waiting for Apply: err is set for an
// invalid one, newOnly for a duplicate some features never counted.
type pendingEvent struct {
	r       *kgo.Record
	ev      *event.Event
	e       *entry
	newOnly []uint64
	err     error
}

func (t *task) prefetchState(it *pendingEvent) {
	if it.err == nil {
		t.sink += it.e.st.NewestMillis()
	}
}

func (t *task) prefetch(it *pendingEvent) {
	if it.err == nil {
		t.sink += t.p.features.Prefetch(it.e.st, it.ev)
	}
}

// touchedSet is the entities a batch changes, each loaded from Pebble
// once, in the order first touched.
type touchedSet struct {
	byID  map[string]*entry
	order []*entry
}

// get returns id's entry, loading it the first time.
func (s *touchedSet) get(t *task, id string) (*entry, error) {
	if e := s.byID[id]; e != nil {
		return e, nil
	}
	e, err := t.load(id)
	if err != nil {
		return nil, err
	}
	if s.byID == nil {
		s.byID = map[string]*entry{}
	}
	s.byID[id] = e
	s.order = append(s.order, e)
	return e, nil
}
