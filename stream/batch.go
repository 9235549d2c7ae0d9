package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A fetched batch goes through a task in stages, over one txn:
//
//	offsets -> decode -> dedupe -> resolve -> apply -> emit -> commit
//
// decode, dedupe, resolve and apply run per chunk of applyChunk records;
// emit and commit once per batch. Each stage reads what the ones before it
// left in the txn and the chunk's pendingEvents, so one can be replaced
// (the identity issue replaces resolve) without touching the others. The
// first error returns: processTxn defers x.abort(), the one abort path,
// so nothing of the transaction is written and the task is reopened from
// its state. A fetch is one txn however many records it holds (a backlog:
// its seen ids go to the changelog in parts, emitSeen), unless its
// entities are too many for one (maxTxnTouchedBytes).

// maxTxnTouchedBytes bounds the bytes of entity ids one transaction
// touches: the changelog's __offset record lists them (the store writes a
// crash may have missed), one record, and a Kafka record holds at most
// 1 MB. A transaction stops taking input chunks once its ids reach it, so
// only a fetch that touches very many distinct entities (~100k of 7-byte
// ids, ~3k of event.MaxIDLen bytes) commits in more than one; a chunk adds
// at most applyChunk ids of at most event.MaxIDLen bytes (~66 KB), which
// stays under the 1 MB.
const maxTxnTouchedBytes = 768 << 10

// batchTimers bounds the due timers a batch fires before its events
// (processTxn), so a partition's backlog of timers (a wake-up after
// hours) delays no batch long: the timer loop works the rest off.
const batchTimers = 256

// maxSeenRecordBytes bounds one changelog record of seen ids (emitSeen):
// a batch's ids are cut into as many records as it takes.
const maxSeenRecordBytes = 512 << 10

// processBatch folds one partition's fetched records into the state and
// commits them: in one transaction, unless the entities they touch are
// too many for one (maxTxnTouchedBytes).
func (t *task) processBatch(ctx context.Context, recs []*kgo.Record, hwm int64) error {
	for len(recs) > 0 {
		var err error
		if recs, err = t.processTxn(ctx, recs, hwm); err != nil {
			return err
		}
	}
	return nil
}

// processTxn folds records into the state and commits them in one
// transaction, all of them or a first part: it returns the records left
// for the next one. With stream.commit_interval the transaction may stay
// open for the fetches that follow (keepOpen): the records are processed,
// and with early store writes their vectors written, but their commit
// waits; the worker holds the work lock meanwhile (see task.open).
func (t *task) processTxn(ctx context.Context, recs []*kgo.Record, hwm int64) (rest []*kgo.Record, err error) {
	start := time.Now()
	x := t.open
	if x == nil {
		t.waiting.Add(1)
		t.work.Lock()
		t.waiting.Add(-1)
	}
	kept := false // x stays open, and the work lock held, for the next fetch
	defer func() {
		if !kept {
			if t.open != nil { // an error with a transaction open
				t.open.abort()
				t.open = nil
			}
			t.work.Unlock()
		}
	}()
	defer t.failOnError(&err)
	if err := t.fault.Err(); err != nil {
		return nil, err // a flush or compaction met it: the task is reopened
	}
	next := t.meta.next
	if x != nil {
		next = x.last + 1
		if len(recs) > 0 && recs[0].Offset < next && hwm < next {
			// The input log was reset while a transaction was open:
			// commit it, then checkOffsets drops the state.
			if err := t.commitOpen(ctx); err != nil {
				return nil, err
			}
			x, next = nil, t.meta.next
		}
	}
	recs, err = t.checkOffsets(ctx, recs, hwm, next)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		kept = x != nil // nothing new: the open transaction waits on
		return nil, nil
	}
	if x == nil {
		x = t.newTxn()
		x.openAt = start
		if t.p.cfg.Stream.CommitInterval > 0 {
			// Open from the first fetch: every read of the batch path
			// goes through its batch (reader), so a later fetch sees
			// what the earlier ones wrote.
			x.b.Close()
			x.b = t.db.NewIndexedBatch()
			t.open = x
		}
	}
	defer func() {
		if !kept {
			x.abort()
		}
	}()
	x.now = t.p.opts.Now()
	x.seen = map[string]struct{}{}
	x.links = map[string]string{}
	x.touched = touchedSet{}
	x.fetches++
	// Timers due now fire first, in this transaction, as if the timer
	// loop had fired just before the batch: a partition that receives
	// events commits one transaction per batch rather than a timer's
	// between two of them, each holding the work lock while it commits.
	// What is left (more than batchTimers, or an idle partition) the timer
	// loop fires.
	if _, _, err := t.fireDue(x, x.now, batchTimers); err != nil {
		return nil, err
	}
	if _, err := t.purgeSeen(x, x.now.UnixMilli()-t.p.cfg.Stream.AllowedLateness.D().Milliseconds()); err != nil {
		return nil, err
	}
	// Resolved records fetched while the task worked (a merge's moves and
	// transfers) ride in this transaction, before the events.
	rode, err := t.rideResolved(x)
	if err != nil {
		return nil, err
	}
	if t.evs == nil {
		t.evs = new([applyChunk]event.Event)
	}
	for from := 0; from < len(recs); from += applyChunk {
		to := min(from+applyChunk, len(recs))
		items := t.decode(recs[from:to])
		items, err := t.dedupe(x, items)
		if err == nil {
			err = t.resolve(x, items)
		}
		if err == nil {
			t.apply(x, items)
		}
		clear(t.items) // keep no entry alive until the next batch
		t.items = t.items[:0]
		if err != nil {
			return nil, err
		}
		if x.idBytes+x.touched.idBytes >= maxTxnTouchedBytes && to < len(recs) {
			recs, rest = recs[:to], recs[to:]
			break
		}
	}
	last := recs[len(recs)-1].Offset
	if err := t.emit(x, last); err != nil {
		return nil, err
	}
	x.idBytes += x.touched.idBytes
	x.last, x.hwm, x.records = last, hwm, x.records+len(recs)
	if rode {
		if err := t.hook("resolved-before-commit"); err != nil {
			return nil, err
		}
	}
	if !rode && len(rest) == 0 && t.keepOpen(x) {
		if err := t.writeEarly(ctx, x); err != nil {
			return nil, err
		}
		mLag.WithLabelValues(t.lagLabel).Set(float64(max(0, hwm-last-1)))
		mBatch.Observe(time.Since(start).Seconds())
		mBatchSize.Observe(float64(len(recs)))
		kept = true
		return nil, nil
	}
	if t.open != nil {
		t.open = nil // committed or not, it ends here (the deferred abort closes it)
	}
	if err := t.commitBatch(ctx, x, hwm); err != nil {
		return nil, err
	}
	mBatch.Observe(time.Since(start).Seconds())
	mBatchSize.Observe(float64(len(recs)))
	if rode {
		mForwarded.Add(float64(x.counts.resolvedForwarded))
		return rest, t.afterResolved()
	}
	return rest, nil
}

// keepOpen reports whether x, an input batch's transaction that has just
// taken a fetch, stays open for the next (stream.commit_interval): while
// it is younger than the interval, far from the limits of one
// transaction, and carries nothing another task waits for (handoff: a
// merge's link requests and forwarded records go at once). Resolved
// records riding in it, or a fetch cut in parts, commit it at once too
// (see processTxn).
func (t *task) keepOpen(x *txn) bool {
	d := t.p.cfg.Stream.CommitInterval.D()
	return d > 0 && !x.handoff && time.Since(x.openAt) < d && x.idBytes < maxTxnTouchedBytes/2 && x.b.Len() < maxOpenBatchBytes
}

// maxOpenBatchBytes bounds the Pebble batch of a transaction kept open:
// past it the transaction commits, however young.
const maxOpenBatchBytes = 32 << 20

// writeEarly writes the vectors of x's last fetch to the store before its
// commit, with early store writes, when x stays open: its events are
// readable at once, as when each fetch commits (commit writes the rest).
func (t *task) writeEarly(ctx context.Context, x *txn) error {
	if t.p.cfg.Stream.StoreWrite != config.StoreWriteEarly {
		return nil
	}
	if err := t.writeStore(ctx, x, vectorsOnly(x.updates[x.early:]), true, t.meta.changelog); err != nil {
		return err
	}
	x.early = len(x.updates)
	x.received = x.received[:0]
	return t.hook("after-store-write")
}

// commitOpen commits the transaction kept open (t.open), under the work
// lock, and closes it whatever the outcome.
func (t *task) commitOpen(ctx context.Context) error {
	x := t.open
	t.open = nil
	defer x.abort()
	return t.commitBatch(ctx, x, x.hwm)
}

// rideOpen applies the resolved records pending (a merge's moves and
// transfers, forwarded events) in x, the transaction kept open, as its
// commit is due: the resolved loop nudged the worker for them, or its
// interval is up. Applied by the loop itself, they would wait for this
// commit (the worker holds the work lock while x is open) and then for
// one of their own: at each of a merge's two hops through the stream, a
// commit more than without a commit interval. As rideResolved in a
// fetch: at most rideResolvedLimit of them, else none (the loop applies
// them after). It reports whether any were applied.
func (t *task) rideOpen(x *txn) (bool, error) {
	// What the fetches before left in x is emitted already; the records
	// here are a step of their own, as a fetch is.
	x.now = t.p.opts.Now()
	x.seen, x.links, x.touched = nil, map[string]string{}, touchedSet{}
	rode, err := t.rideResolved(x)
	if err != nil || !rode {
		return false, err
	}
	if err := t.emit(x, x.last); err != nil {
		return false, err
	}
	x.idBytes += x.touched.idBytes
	// A step as a fetch is: its entities may be the fetches' too, written
	// once by the commit (lastVectors, uniqueIDs).
	x.fetches++
	return true, t.hook("resolved-before-commit")
}

// checkOffsets is the offsets stage: it detects a reset input log
// (offsets going back past the state while the high watermark is behind
// it too), drops the partition's state then, and returns the records the
// state does not hold yet.
func (t *task) checkOffsets(ctx context.Context, recs []*kgo.Record, hwm, next int64) ([]*kgo.Record, error) {
	if first := recs[0].Offset; first < next && hwm < next {
		t.log.Warn("input log was reset (offsets went back): dropping the partition's state and resynchronising",
			"topic", t.topic, "expected_offset", next, "got_offset", first)
		mResets.Inc()
		if err := t.wipe(ctx); err != nil {
			return nil, err
		}
		next = t.meta.next
	} else if first > next && next > 0 {
		t.log.Warn("input records skipped (retention deleted them before they were processed)", "from", next, "to", first)
	}
	// Records before next are in the state already (a fetch from before a
	// seek) or in the open transaction; skip them.
	for len(recs) > 0 && recs[0].Offset < next {
		recs = recs[1:]
	}
	return recs, nil
}

// decode reads each record into an event (t.evs, reused). It guarantees
// every item either has an event with a messageId (the record's input
// position when the event has none, so a re-read record is the same
// event) or, for a record that is not an event, the error.
func (t *task) decode(recs []*kgo.Record) []pendingEvent {
	items := t.items[:0]
	for i, r := range recs {
		ev := &t.evs[i] // reused, maps and all: Apply keeps no pointer into it
		if err := t.p.records.Unmarshal(r.Value, ev); err != nil {
			items = append(items, pendingEvent{r: r, err: err})
			continue
		}
		if ev.MessageID == "" {
			ev.MessageID = r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10)
		}
		items = append(items, pendingEvent{r: r, ev: ev})
	}
	t.items = items
	return items
}

// dedupe drops the events seen before, earlier in the batch or in one
// within the allowed lateness (the seen ids in Pebble, behind the Bloom
// filter), and counts them. It guarantees each kept event is new, and
// records it in x.seen, except a duplicate of an event seen before some
// features were activated: it stays, its newOnly listing those features,
// which never counted it. Invalid records pass through.
func (t *task) dedupe(x *txn, items []pendingEvent) ([]pendingEvent, error) {
	kept := items[:0]
	for _, it := range items {
		if it.err != nil {
			kept = append(kept, it)
			continue
		}
		id := it.ev.MessageID
		if _, ok := x.seen[id]; ok {
			x.counts.duplicate++
			continue
		}
		if t.seen.MayHave(id) { // else never seen: no lookup
			seen, at, err := t.seenAt(id)
			if err != nil {
				return nil, err
			}
			if seen {
				x.counts.duplicate++
				if it.newOnly = t.activatedAfter(at); len(it.newOnly) == 0 {
					continue
				}
			}
		}
		if it.newOnly == nil {
			x.seen[id] = struct{}{}
		}
		kept = append(kept, it)
	}
	return kept, nil
}

// resolve finds each event's entity and loads it (once per batch, into
// x.touched). The entity is the userId, else the user the anonymousId was
// identified as (by an earlier event of this batch or in the state), else
// the anonymousId. An identify or alias of a new event links its
// anonymousId and previousId to its userId (x.links, written by emit).
func (t *task) resolve(x *txn, items []pendingEvent) error {
	if t.identityOn() {
		return t.resolveLinked(x, items)
	}
	for i := range items {
		it := &items[i]
		if it.err != nil {
			continue
		}
		ev := it.ev
		if it.newOnly == nil && ev.UserID != "" && (ev.Type == event.Identify || ev.Type == event.Alias) {
			for _, anon := range []string{ev.AnonymousID, ev.PreviousID} {
				if anon != "" && anon != ev.UserID {
					x.links[anon] = ev.UserID
				}
			}
		}
		id := ev.UserID
		if id == "" {
			var err error
			if id, err = t.userOf(ev.AnonymousID, x.links); err != nil {
				return err
			}
		}
		e, err := x.touched.get(t, id)
		if err != nil {
			return err
		}
		it.e = e
	}
	return nil
}

// resolveLinked is resolve with identity resolution on: each event's
// entity is its userId, else its anonymousId, unless that entity moved
// into another (identity.go): then the event is forwarded to the
// target's task and not applied here. A new identify or alias sends its
// link requests to the linker.
func (t *task) resolveLinked(x *txn, items []pendingEvent) error {
	for i := range items {
		it := &items[i]
		if it.err != nil {
			continue
		}
		ev := it.ev
		id := ev.EntityID()
		if drop, err := t.beforeDeletion(x, id, receivedAt(ev, it.r)); err != nil {
			return err
		} else if drop {
			// Received before its entity's deletion: dropped, its link
			// requests too (they would link the deleted ids again).
			it.deleted = true
			x.counts.deleted++
			continue
		}
		if it.newOnly == nil {
			t.requestLinks(x, ev)
		}
		to, err := t.target(x, id)
		if err != nil {
			return err
		}
		if to != id {
			if it.newOnly == nil { // else counted where it moved, if at all
				t.forward(x, resolved{Kind: resolvedEvent, To: to, Event: it.r.Value})
			}
			it.forwarded = true
			continue
		}
		if it.e, err = x.touched.get(t, id); err != nil {
			return err
		}
	}
	return nil
}

// userOf maps an anonymous id to the user it was identified as.
func (t *task) userOf(anon string, batch map[string]string) (string, error) {
	if u, ok := batch[anon]; ok {
		return u, nil
	}
	b, closer, err := t.reader().Get(key(pkAlias, anon))
	if errors.Is(err, pebble.ErrNotFound) {
		return anon, nil
	}
	if err != nil {
		return "", err
	}
	defer closer.Close()
	return string(b), nil
}

// apply folds each event into its entity's state, in input order,
// prefetching the states a few records ahead. It guarantees every item is
// counted once: applied (the entity is marked touched, with the offset and
// time of its last event), ignored (no feature changed), or dead-lettered
// in x.recs (invalid, or too late for every window). A duplicate some
// features never counted goes to them alone (crossCut).
func (t *task) apply(x *txn, items []pendingEvent) {
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
		t.applyOne(x, &items[k])
	}
}

func (t *task) applyOne(x *txn, it *pendingEvent) {
	r, ev, e := it.r, it.ev, it.e
	if it.forwarded || it.deleted {
		return
	}
	if it.err != nil {
		x.recs = append(x.recs, t.deadLetter(r, event.ReasonInvalid, "", it.err, x.now))
		x.counts.invalid++
		return
	}
	var changed bool
	var err error
	if it.newOnly == nil {
		changed, err = t.p.features.Apply(e.st, ev)
	} else {
		changed, err = t.crossCut(x, e.id, e.st, ev, r, it.newOnly)
	}
	if errors.Is(err, aggregate.ErrTooLate) {
		x.recs = append(x.recs, t.deadLetter(r, event.ReasonLate, ev.MessageID, err, x.now))
		x.counts.late++
		return
	}
	if err != nil {
		x.recs = append(x.recs, t.deadLetter(r, event.ReasonInvalid, ev.MessageID, err, x.now))
		x.counts.invalid++
		return
	}
	if !changed {
		x.counts.ignored++
		return
	}
	x.counts.applied++
	e.touched, e.offset, e.at = true, r.Offset, ev.Timestamp
	if ev.ReceivedAt.After(e.eventAt) {
		e.eventAt = ev.ReceivedAt
	}
	if !ev.ReceivedAt.IsZero() {
		x.received = append(x.received, ev.ReceivedAt.UnixMilli())
	}
}

// deadLetter is the invalid-events record of input record r, refused for
// err (reason event.ReasonInvalid or event.ReasonLate), with its position.
func (t *task) deadLetter(r *kgo.Record, reason, msgID string, err error, now time.Time) *kgo.Record {
	dl := event.NewDeadLetter("stream", reason, r.Value, err, now)
	dl.MessageID, dl.Topic, dl.Partition, dl.Offset = msgID, r.Topic, r.Partition, r.Offset
	return &kgo.Record{Topic: t.p.cfg.Kafka.Topics.Invalid, Key: r.Key, Value: dl.Encode()}
}

// emit turns the batch's changes into what commit writes. It guarantees
// each touched entity has its new state, timer, vector, segment changes
// and changelog record in x (finish), and that the batch's seen ids (to
// the last offset) and links are in the Pebble batch and the changelog.
func (t *task) emit(x *txn, last int64) error {
	// Grown, not replaced: the timers fired before the events are in.
	x.updates = slices.Grow(x.updates, len(x.touched.order))
	x.pending = slices.Grow(x.pending, len(x.touched.order))
	x.recs = slices.Grow(x.recs, len(x.touched.order)+len(x.links)+2)
	for _, e := range x.touched.order {
		if !e.touched {
			continue // nothing applied: unchanged
		}
		if err := t.finish(x, e, x.now, false); err != nil {
			return err
		}
	}
	t.emitSeen(x, last)
	for anon, user := range x.links {
		if anon == user {
			continue // a forgotten entity's (forget): its pointer deleted, not one to itself
		}
		x.b.Set(key(pkAlias, anon), []byte(user), nil)
		x.recs = append(x.recs, t.stateRecord([]byte(clAliasPrefix+anon), []byte(user)))
	}
	return nil
}

// emitSeen writes the batch's seen ids (x.seen), each under pkSeen with
// the batch's last offset, and in parts of at most maxSeenRecordBytes
// encoded, each part under its own key (seenKey, seenChangelogKey) in
// Pebble and the changelog, so a backlog's many ids never make a record
// over Kafka's 1 MB. A batch of one part has the key it had before parts.
func (t *task) emitSeen(x *txn, last int64) {
	if len(x.seen) == 0 {
		return
	}
	sb := seenBatch{seenMs: x.now.UnixMilli(), ids: make([]string, 0, len(x.seen))}
	part, size := 0, 0
	flush := func() {
		v := sb.encode()
		x.b.Set(seenKey(last, part), v, nil)
		x.recs = append(x.recs, t.stateRecord([]byte(seenChangelogKey(last, part)), v))
		sb.ids, part, size = sb.ids[:0], part+1, 0
	}
	for id := range x.seen {
		// The value is the batch's last offset: a duplicate later
		// tells whether a feature activated since missed the original.
		op := x.b.SetDeferred(len(pkSeen)+len(id), 8)
		copy(op.Key[copy(op.Key, pkSeen):], id)
		binary.BigEndian.PutUint64(op.Value, uint64(last))
		op.Finish()
		t.seen.Add(id)
		n := uvarintLen(len(id)) + len(id) // encoded: its length, then it
		// The part's head: the time and the count, varints.
		if size+n > maxSeenRecordBytes-2*binary.MaxVarintLen64 && len(sb.ids) > 0 {
			flush()
		}
		sb.ids = append(sb.ids, id)
		size += n
	}
	flush()
}

// commitBatch commits x, an input batch's transaction, with the input
// offset after its last record (commit: the Kafka transaction, Pebble, the
// store), then grows the seen filter when it filled and records the
// batch's metrics; hwm is the partition's high watermark at its last fetch.
func (t *task) commitBatch(ctx context.Context, x *txn, hwm int64) error {
	if x.fetches > 1 {
		x.pending = uniqueIDs(x.pending)
	}
	if err := t.commit(ctx, x, x.last+1); err != nil {
		return err
	}
	if t.seen.Full() {
		f, err := buildSeenFilter(t.db)
		if err != nil {
			return err
		}
		t.seen = f
	}
	c := x.counts
	mEvents.WithLabelValues("applied").Add(float64(c.applied))
	mEvents.WithLabelValues("ignored").Add(float64(c.ignored))
	mEvents.WithLabelValues("duplicate").Add(float64(c.duplicate))
	mEvents.WithLabelValues("late").Add(float64(c.late))
	mEvents.WithLabelValues("invalid").Add(float64(c.invalid))
	if c.forwarded > 0 {
		mEvents.WithLabelValues("forwarded").Add(float64(c.forwarded))
		mForwarded.Add(float64(c.forwarded))
	}
	if c.deleted > 0 {
		mEvents.WithLabelValues("deleted").Add(float64(c.deleted))
	}
	mLag.WithLabelValues(t.lagLabel).Set(float64(max(0, hwm-x.last-1)))
	mTxnFetches.Observe(float64(x.fetches))
	return nil
}

// uniqueIDs is ids without repeats, in the order first listed: the
// entities of a transaction that took several fetches.
func uniqueIDs(ids []string) []string {
	seen := make(map[string]struct{}, len(ids))
	out := ids[:0]
	for _, id := range ids {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}

// applyChunk is how many records processBatch decodes before applying
// them, and prefetchAhead how far ahead of Apply it prefetches states.
const (
	applyChunk    = 256
	prefetchAhead = 4
)

// pendingEvent is a decoded record on its way through the stages: err is
// set for an invalid one, newOnly for a duplicate some features never
// counted, e once resolved.
type pendingEvent struct {
	r       *kgo.Record
	ev      *event.Event
	e       *entry
	newOnly []uint64
	err     error
	// forwarded: the entity moved; the event went to its target's task.
	forwarded bool
	// deleted: received before its entity's deletion; dropped.
	deleted bool
}

func (t *task) prefetchState(it *pendingEvent) {
	if it.err == nil && !it.forwarded && !it.deleted {
		t.sink += it.e.st.NewestMillis()
	}
}

func (t *task) prefetch(it *pendingEvent) {
	if it.err == nil && !it.forwarded && !it.deleted {
		t.sink += t.p.features.Prefetch(it.e.st, it.ev)
	}
}

// touchedSet is the entities a batch changes, each loaded from Pebble
// once, in the order first touched.
type touchedSet struct {
	byID  map[string]*entry
	order []*entry
	// idBytes is the ids' length as the __offset record lists them
	// (each after its length, a uvarint), for maxTxnTouchedBytes.
	idBytes int
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
	s.idBytes += len(id) + uvarintLen(len(id))
	return e, nil
}

// uvarintLen is the length of n as a uvarint.
func uvarintLen(n int) int {
	k := 1
	for ; n >= 0x80; n >>= 7 {
		k++
	}
	return k
}
