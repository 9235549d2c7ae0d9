package stream

import (
	"context"
	"errors"
	"fmt"
	"runtime/trace"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// txn is what one commit writes: changelog, segment and dead-letter
// records, the Pebble batch and the store updates. A batch of input
// records also keeps here what its stages hand on to the next (see
// batch.go); the timer, seeds and restore paths use the first part only.
type txn struct {
	recs      []*kgo.Record
	b         *pebble.Batch
	updates   []featurestore.Update
	pending   []string
	received  []int64 // receivedAt (ms) of the events applied, for freshness
	segEnter  int
	segExit   int
	timerFire int
	// lateStore keeps the store write after the Kafka commit even with
	// early store writes: a re-score chunk's (its replay, at a later
	// time, writes only the entities whose group changes then, which
	// need not be the failed chunk's).
	lateStore bool

	// Of an input batch.
	now     time.Time           // the processing time of the whole batch
	seen    map[string]struct{} // dedupe: message ids first seen in this batch
	links   map[string]string   // resolve: anonymousId -> userId made by this batch
	forgot  map[string]int64    // deletion markers this transaction set (> 0) or cleared (0)
	touched touchedSet          // resolve: the entities the batch loaded, in order
	counts  eventCounts         // apply: what became of the records, for metrics

	// Of an input batch's transaction kept open across fetches
	// (stream.commit_interval); with one fetch, that fetch's.
	openAt  time.Time // when its first fetch began
	fetches int       // the fetches it took
	records int       // their records
	last    int64     // the input offset of its last record
	hwm     int64     // the high watermark at its last fetch
	idBytes int       // the touched ids of its fetches before the last (maxTxnTouchedBytes)
	early   int       // x.updates[:early] went to the store already (writeEarly)
	// handoff: it carries records another task or the linker waits for
	// (link requests, forwarded events and moves), so it is not kept
	// open: a merge would wait for the interval at every hop.
	handoff bool
}

// eventCounts are a batch's input records by result (mEvents).
type eventCounts struct {
	applied, ignored, duplicate, late, invalid int
	forwarded                                  int // to a moved entity's target
	deleted                                    int // received before their entity's deletion (forget): dropped
	// resolvedForwarded: resolved records (transfers, forwarded events)
	// a batch carried and sent on to a target that moved too.
	resolvedForwarded int
}

func (t *task) newTxn() *txn { return &txn{b: t.db.NewBatch()} }

// abort releases x's Pebble batch, dropping its writes unless commit
// applied them. It may be called any number of times, so every path that
// makes a txn defers it: an error anywhere leaves nothing written.
func (x *txn) abort() {
	if x.b != nil {
		x.b.Close()
		x.b = nil
	}
}

// partitionLog is what a task's commits need of Kafka: the transactional
// producer's calls and the input partition's start offset. kafkaLog is the
// real one; the tester keeps the records in memory.
type partitionLog interface {
	BeginTransaction() error
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	Flush(ctx context.Context) error
	EndTransaction(ctx context.Context, commit kgo.TransactionEndTry) error
	// startOffset is the input partition's first offset; ok is false
	// when the broker does not say.
	startOffset(ctx context.Context) (offset int64, ok bool, err error)
}

// kafkaLog is a task's transactional producer.
type kafkaLog struct {
	*kgo.Client
	topic     string
	partition int32
}

func (l kafkaLog) startOffset(ctx context.Context) (int64, bool, error) {
	starts, err := kadm.NewClient(l.Client).ListStartOffsets(ctx, l.topic)
	if err != nil {
		return 0, false, fmt.Errorf("cannot list start offsets of %s: %w", l.topic, err)
	}
	if o, ok := starts.Lookup(l.topic, l.partition); ok && o.Err == nil {
		return o.Offset, true, nil
	}
	return 0, false, nil
}

// failOnError, deferred under the work lock by every path that changes
// the task's entities, marks the task failed when *err is set: the
// entities in memory may hold changes of work that was never committed
// (events applied, a window slid), and a later commit must not write them
// (commit refuses: the task is reopened from its state first).
func (t *task) failOnError(err *error) {
	if *err != nil {
		t.workFailed.Store(true)
	}
}

// errBroken refuses a commit of a task whose earlier work or commit failed.
var errBroken = errors.New("earlier work of this task failed: it commits nothing more until it is reopened from its state")

// commit writes x: the Kafka transaction, then the store, then the Pebble
// batch. next is the input offset the state reaches. With
// stream.store_write: early the vectors go to the store first, before the
// Kafka transaction: no commit then lies between an event and its features
// in the store, and a transaction that fails after that write shows there
// until the reopened task's replay writes the same entities again. The
// member lists' changes still wait for the commit (membershipChanges): the
// store keeps those lists by the changes it is told, and a replay at a
// later processing time need not make the failed transaction's changes
// again (a window slid meanwhile), so changes told early could stay wrong
// for good. A re-score chunk (lateStore) writes everything after its
// commit in both modes: its replay writes only the entities whose group
// changes then, which need not be the failed chunk's.
//
// A commit that fails anywhere breaks the task, as work that failed before
// its commit does: each path that commits defers failOnError under the
// work lock, and every later commit (the worker's, the timer loop's, the
// resolved loop's) is refused until the task is reopened from its state.
// Past the Kafka commit, a later
// transaction would otherwise record its own pending entities in place of
// the failed one's (whose store write then never happens, not even after
// the reopen) and move the Pebble state's changelog position past a
// transaction Pebble never took (which a reopen from that state would then
// skip). The task's in-memory entities hold the failed batch's changes too.
func (t *task) commit(ctx context.Context, x *txn, next int64) error {
	defer x.abort()
	if t.workFailed.Load() {
		return errBroken
	}
	early := t.p.cfg.Stream.StoreWrite == config.StoreWriteEarly && !x.lateStore
	if early {
		// The store's mark: the last committed transaction's, whose
		// writes this one follows.
		if err := t.writeStore(ctx, x, vectorsOnly(x.updates[x.early:]), true, t.meta.changelog); err != nil {
			return err
		}
		if err := t.hook("after-store-write"); err != nil {
			return err
		}
	}
	off := t.stateRecord([]byte(clOffsetKey), offsetValue(next, x.pending))
	start := time.Now()
	// The Kafka transaction is a region of an execution trace (`pulse
	// loadtest freshness -trace`, tools/traceslow -region txn).
	region, inRegion := trace.StartRegion(ctx, "txn"), true
	defer func() {
		if inRegion {
			region.End()
		}
	}()
	if err := t.out.BeginTransaction(); err != nil {
		return fmt.Errorf("cannot begin transaction: %w", err)
	}
	var failed kafka.Failures
	done := failed.Promise
	for _, r := range x.recs {
		t.out.Produce(ctx, r, done)
	}
	t.out.Produce(ctx, off, done)
	if err := t.out.Flush(ctx); err != nil {
		return fmt.Errorf("cannot flush transaction: %w", err)
	}
	if err := failed.Err(); err != nil {
		return fmt.Errorf("cannot produce transaction: %w", err)
	}
	if err := t.hook("before-txn-commit"); err != nil {
		return err
	}
	if err := t.out.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("cannot commit transaction: %w", err)
	}
	mTxnSeconds.Observe(time.Since(start).Seconds())
	region.End()
	inRegion = false
	countRecords(x.recs, off)
	if err := t.hook("after-txn-commit"); err != nil {
		return err
	}
	// The store before the local state: the transaction is committed,
	// so its results may be read, and the local state's commit (synced
	// once a second) stays off the path from an event to its features. A
	// crash between the two is what a crash before the local commit always
	// was: the reopened task restores the transaction from the changelog
	// and writes its entities to the store again (pending).
	if early {
		if err := t.writeStore(ctx, x, membershipChanges(x.updates), false, off.Offset); err != nil {
			return err
		}
	} else {
		ups := x.updates
		if x.fetches > 1 {
			ups = lastVectors(ups)
		}
		if err := t.writeStore(ctx, x, ups, true, off.Offset); err != nil {
			return err
		}
		if err := t.hook("after-store-write"); err != nil {
			return err
		}
	}
	t.mu.Lock()
	t.meta.next, t.meta.changelog, t.meta.pending = next, off.Offset, x.pending
	t.meta.storeMark = t.lastMark + 1
	t.meta.asOf = t.p.opts.Now().UnixMilli()
	x.b.Set(pkMeta, t.meta.encode(), nil)
	t.mu.Unlock()
	// Synced once a second: a disk that refuses writes is heard of then
	// (an unsynced commit succeeds in memory; the WAL's writer keeps the
	// error for the next sync), and what a machine crash can lose, to be
	// restored from the changelog, stays that short.
	wo, synced := pebble.NoSync, "false"
	if time.Since(t.synced) >= syncEvery {
		wo, synced = pebble.Sync, "true"
	}
	committing := time.Now()
	if err := t.fault.Commit(x.b, wo); err != nil {
		return fmt.Errorf("cannot commit stream state: %w", err)
	}
	mStateCommit.WithLabelValues(synced).Observe(time.Since(committing).Seconds())
	if wo == pebble.Sync {
		t.synced = time.Now()
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
	return t.hook("after-pebble-commit")
}

// writeStore writes ups, of x, to the online store, with mark (storeWrite);
// fresh: they make x's events readable (pulse_stream_event_to_store_seconds).
func (t *task) writeStore(ctx context.Context, x *txn, ups []featurestore.Update, fresh bool, mark int64) error {
	if len(ups) == 0 {
		return nil
	}
	start := time.Now()
	if err := t.storeWrite(ctx, ups, mark); err != nil {
		return fmt.Errorf("cannot write the online store: %w", err)
	}
	now := time.Now()
	mStoreWrite.Observe(now.Sub(start).Seconds())
	if fresh {
		for _, r := range x.received {
			mEventToStore.Observe(now.Sub(time.UnixMilli(r)).Seconds())
		}
	}
	return nil
}

// vectorsOnly is ups without their segment changes: an early store write,
// before the Kafka commit (membershipChanges follow it).
func vectorsOnly(ups []featurestore.Update) []featurestore.Update {
	out := make([]featurestore.Update, len(ups))
	for i := range ups {
		out[i].Vector, out[i].Delete = ups[i].Vector, ups[i].Delete
	}
	return out
}

// membershipChanges are the updates of ups that change a segment
// membership, written after the Kafka commit when the vectors went early:
// each with the last vector ups has for its entity, which the early write
// left in the store (a transaction finishes an entity more than once when
// a timer fires before its events, or when it was kept open for several
// fetches), and with its member list changes.
func membershipChanges(ups []featurestore.Update) []featurestore.Update {
	var out []featurestore.Update
	for _, u := range ups {
		if len(u.Enter)+len(u.Exit) > 0 {
			out = append(out, u)
		}
	}
	if len(out) == 0 {
		return nil
	}
	last := make(map[string]int, len(out))
	for _, u := range out {
		last[u.Vector.ID] = -1
	}
	for i, u := range ups {
		if _, ok := last[u.Vector.ID]; ok {
			last[u.Vector.ID] = i
		}
	}
	for i := range out {
		j := last[out[i].Vector.ID]
		out[i].Vector, out[i].Delete = ups[j].Vector, ups[j].Delete
	}
	return out
}

// lastVectors is ups, of a transaction kept open for several fetches,
// with one write of each entity's last vector: an update that changes no
// membership and is not its entity's last is left out, and the others
// (the changes, in their order) carry the last vector.
func lastVectors(ups []featurestore.Update) []featurestore.Update {
	last := make(map[string]int, len(ups))
	for i, u := range ups {
		last[u.Vector.ID] = i
	}
	if len(last) == len(ups) {
		return ups
	}
	out := make([]featurestore.Update, 0, len(last))
	for i, u := range ups {
		j := last[u.Vector.ID]
		if i != j && len(u.Enter)+len(u.Exit) == 0 {
			continue
		}
		u.Vector, u.Delete = ups[j].Vector, ups[j].Delete
		out = append(out, u)
	}
	return out
}

// countRecords adds a committed transaction's records, off (its __offset
// record) included, to pulse_stream_txn_records_total by topic.
func countRecords(recs []*kgo.Record, off *kgo.Record) {
	var topics [8]string
	var counts [8]int
	n := 0
	add := func(topic string) {
		for i := range n {
			if topics[i] == topic {
				counts[i]++
				return
			}
		}
		if n == len(topics) {
			mTxnRecords.WithLabelValues(topic).Inc()
			return
		}
		topics[n], counts[n] = topic, 1
		n++
	}
	for _, r := range recs {
		add(r.Topic)
	}
	add(off.Topic)
	for i := range n {
		mTxnRecords.WithLabelValues(topics[i]).Add(float64(counts[i]))
	}
}
