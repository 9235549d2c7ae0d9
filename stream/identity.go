package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/deletion"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/keyfilter"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Identity resolution in the stream (identity.enabled; see doc.go):
//
//   - resolve (batch.go) sends each identify's and alias's link requests
//     to the linker, in the batch's transaction, and forwards the events
//     of a moved entity (its pointer, a/<id> -> target) to the target's
//     task on the resolved topic instead of applying them;
//   - a loop of the task reads its partition of the resolved topic
//     (read_committed, from meta.resolvedNext, in one transaction with
//     what it changes, as seeds are read): a move retires the entity
//     (segment exits, state deleted, pointer set) and sends its state to
//     the target; a transfer merges a state into the target's
//     (aggregate.Merge, every feature), an event applies to it; a target
//     that moved too gets the record forwarded on.

// identityOn reports whether the task resolves identities through the linker.
func (t *task) identityOn() bool { return t.p.cfg.Identity.On() }

// requestLinks adds the link requests of ev to x, for the linker.
func (t *task) requestLinks(x *txn, ev *event.Event) {
	for _, q := range t.p.idopts.Requests(ev) {
		v, err := identity.EncodeRequest(q)
		if err != nil {
			continue // only strings and a time: cannot fail
		}
		x.recs = append(x.recs, &kgo.Record{Topic: t.p.cfg.Kafka.Topics.IdentityRequests, Key: []byte(q.To.Value), Value: v})
		x.handoff = true
	}
}

// target follows id's pointer: the entity it moved into, or id itself.
// The pointers set by the transaction in progress (x.links) come first;
// the filter of moved entities (t.moved) spares the Pebble lookup of
// nearly every entity, which never moved.
func (t *task) target(x *txn, id string) (string, error) {
	if _, ok := x.links[id]; !ok && t.moved != nil && !t.moved.MayHave(id) {
		return id, nil
	}
	return t.userOf(id, x.links)
}

// openMoved builds the filter of the partition's moved entities.
func (t *task) openMoved() error {
	if !t.identityOn() {
		return nil
	}
	var err error
	if t.moved, err = keyfilter.Build(t.db, pkAlias); err != nil {
		return err
	}
	if t.forgot, err = keyfilter.Build(t.db, pkForgot); err == nil && t.forgot.Added() == 0 {
		t.forgot = nil // no deletion: no filter to ask per event (setForgot makes one)
	}
	return err
}

// forward sends r (with To set) to the task of r.To.
func (t *task) forward(x *txn, r resolved) {
	x.recs = append(x.recs, &kgo.Record{Topic: t.p.cfg.Kafka.Topics.Resolved, Key: []byte(r.To), Value: encodeResolved(r)})
	x.handoff = true
	x.counts.forwarded++
}

// openResolved starts reading the partition's resolved records from the
// stored offset.
func (t *task) openResolved() error {
	if !t.identityOn() {
		return nil
	}
	var err error
	t.resolvedIn, err = kafka.NewClient(t.p.cfg.Kafka, append([]kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			t.p.cfg.Kafka.Topics.Resolved: {t.partition: kgo.NewOffset().At(t.meta.resolvedNext)},
		}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(16 << 20),
	}, t.p.opts.KafkaOpts...)...)
	return err
}

// resolvedLoop applies the partition's resolved records as they come
// (a merge is visible within a few transactions of its identify, not a
// timer tick), until the task closes; a failure reopens the task, as the
// timer loop's does.
func (t *task) resolvedLoop() {
	defer close(t.resolvedDone)
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
		fs := t.resolvedIn.PollRecords(ctx, 5000)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				t.log.Debug("resolved fetch error", "topic", topic, "err", err)
			}
		})
		recs := fs.Records()
		if len(recs) == 0 {
			continue
		}
		t.addResolved(recs)
		if err := t.applyResolved(ctx); err != nil {
			if errors.Is(err, errKill) {
				t.p.taskFailed(t, err)
				return
			}
			if errors.Is(err, errBroken) {
				return // whoever broke the task reopens or closes it
			}
			if ctx.Err() == nil {
				t.log.Error("identity: applying resolved records failed; the task will be reopened", "err", err)
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

// applyResolved handles the pending moves, transfers and forwarded
// events and commits them with the next resolved offset, as a batch of
// events would be: in one transaction, unless the entities they touch are
// too many for one (maxTxnTouchedBytes, as for a batch of events). A
// batch that takes the work lock first may carry them (rideResolved);
// what is pending when the loop gets the lock, it applies itself, so
// nothing the loop fetched waits for another fetch.
func (t *task) applyResolved(ctx context.Context) error {
	for {
		more, err := t.applyResolvedTxn(ctx)
		if err != nil || !more {
			return err
		}
	}
}

// addResolved puts fetched resolved records in line to be applied.
func (t *task) addResolved(recs []*kgo.Record) {
	t.resolvedMu.Lock()
	t.resolvedPend = append(t.resolvedPend, recs...)
	t.resolvedMu.Unlock()
}

// takeResolved takes the pending resolved records, all of them, or none
// when they are more than limit (limit 0: no limit).
func (t *task) takeResolved(limit int) []*kgo.Record {
	t.resolvedMu.Lock()
	defer t.resolvedMu.Unlock()
	recs := t.resolvedPend
	if len(recs) == 0 || (limit > 0 && len(recs) > limit) {
		return nil
	}
	t.resolvedPend = nil
	return recs
}

// applyResolvedTxn applies the pending resolved records in one
// transaction, all of them or a first part (the rest stays pending, first
// in line). It reports whether any were pending.
func (t *task) applyResolvedTxn(ctx context.Context) (_ bool, err error) {
	t.waiting.Add(1)
	t.nudgeWorker() // a transaction kept open would hold a merge back
	t.work.Lock()
	t.waiting.Add(-1)
	defer t.work.Unlock()
	defer t.failOnError(&err)
	recs := t.takeResolved(0)
	if len(recs) == 0 {
		return false, nil // a batch carried them
	}
	x := t.newTxn()
	defer x.abort()
	x.now, x.links = t.p.opts.Now(), map[string]string{}
	rest, next, err := t.resolvedInto(x, recs, true)
	if err != nil {
		return false, err
	}
	if len(rest) > 0 {
		t.resolvedMu.Lock()
		t.resolvedPend = append(rest, t.resolvedPend...)
		t.resolvedMu.Unlock()
	}
	if next == t.meta.resolvedNext {
		return true, nil
	}
	for _, e := range x.touched.order {
		if e.touched {
			if err := t.finish(x, e, x.now, false); err != nil {
				return false, err
			}
		}
	}
	t.setResolvedNext(x, next)
	if err := t.hook("resolved-before-commit"); err != nil {
		return false, err
	}
	if err := t.commit(ctx, x, t.meta.next); err != nil {
		return false, err
	}
	mForwarded.Add(float64(x.counts.forwarded))
	if x.counts.deleted > 0 {
		mEvents.WithLabelValues("deleted").Add(float64(x.counts.deleted))
	}
	return true, t.afterResolved()
}

// rideResolvedLimit bounds the resolved records a batch of events
// carries: a few merges' worth, which cost its transaction little; a
// backlog is the resolved loop's to apply, in transactions of its own.
const rideResolvedLimit = 64

// rideResolved applies the pending resolved records in x, the
// transaction of a batch of events, before its events (which then see
// the pointers the moves set): a merge's step waits for one commit, not
// for the batch's and then its own. It reports whether x carries any.
func (t *task) rideResolved(x *txn) (bool, error) {
	if !t.identityOn() {
		return false, nil
	}
	recs := t.takeResolved(rideResolvedLimit)
	if len(recs) == 0 {
		return false, nil
	}
	fwd := x.counts.forwarded
	_, next, err := t.resolvedInto(x, recs, false)
	if err != nil {
		return false, err
	}
	x.counts.resolvedForwarded += x.counts.forwarded - fwd
	x.counts.forwarded = fwd
	if next == t.meta.resolvedNext {
		return false, nil
	}
	t.setResolvedNext(x, next)
	return true, nil
}

// resolvedInto applies resolved records in x: a move retires its entity,
// a transfer or forwarded event applies to its target. With bounded, it
// stops once x touches maxTxnTouchedBytes of ids and returns the records
// left (a record touches at most one entity, so the ids stay within a
// record's size of the bound). next is the resolved offset after the
// last record applied.
func (t *task) resolvedInto(x *txn, recs []*kgo.Record, bounded bool) (rest []*kgo.Record, next int64, err error) {
	next = t.meta.resolvedNext
	for i, r := range recs {
		if bounded && x.touched.idBytes >= maxTxnTouchedBytes {
			return recs[i:], next, nil
		}
		if r.Offset < next {
			continue // applied already (a fetch from before a reopen)
		}
		next = r.Offset + 1
		rr, err := decodeResolved(r.Value)
		if err != nil {
			x.recs = append(x.recs, t.deadLetter(r, event.ReasonUnreadable, "", err, x.now))
			continue
		}
		cause := r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10)
		switch rr.Kind {
		case resolvedMove:
			err = t.move(x, rr, cause)
		case resolvedForget:
			err = t.forget(x, rr, cause)
		default:
			err = t.receive(x, r, rr, cause)
		}
		if err != nil {
			return nil, next, err
		}
	}
	return nil, next, nil
}

// setResolvedNext records in x that the resolved records before next are
// applied (meta, and the changelog's __resolved record).
func (t *task) setResolvedNext(x *txn, next int64) {
	x.recs = append(x.recs, t.stateRecord([]byte(clResolvedKey), binary.AppendVarint(nil, next)))
	t.mu.Lock()
	t.meta.resolvedNext = next
	t.mu.Unlock()
}

// afterResolved runs after a commit that applied resolved records: a
// filter of moved entities grown full is rebuilt.
func (t *task) afterResolved() error {
	if (t.moved != nil && t.moved.Full()) || (t.forgot != nil && t.forgot.Full()) {
		return t.openMoved()
	}
	return nil
}

// move retires entity rr.From into rr.To: its state goes to rr.To's task,
// its memberships exit, its state and vector go, its pointer is set.
func (t *task) move(x *txn, rr resolved, cause string) error {
	from := rr.From
	if to, err := t.target(x, from); err != nil {
		return err
	} else if to != from {
		t.log.Warn("identity move of an entity that moved before: ignored", "entity", from, "moved_to", to, "move_to", rr.To)
		return nil
	}
	e, err := x.touched.get(t, from)
	if err != nil {
		return err
	}
	if !e.st.Empty() {
		t.forward(x, resolved{Kind: resolvedTransfer, From: from, To: rr.To, At: rr.At, Cause: rr.Cause, State: e.st.AppendBinary(nil)})
	}
	if err := t.retire(x, e, rr.To, rr.At, cause); err != nil {
		return err
	}
	x.links[from] = rr.To
	if t.moved != nil {
		t.moved.Add(from) // before a later batch asks; kept if this one fails: a false positive
	}
	x.b.Set(key(pkAlias, from), []byte(rr.To), nil)
	x.recs = append(x.recs, t.stateRecord([]byte(clAliasPrefix+from), []byte(rr.To)))
	return nil
}

// retire empties entity e, merged into to: every membership exits
// (segment records and the store), its state, timer and changelog record
// are deleted, and its vector in the store holds the values of no events
// and CanonicalID to, which readers follow (what a rewrite after a crash
// writes for it too).
func (t *task) retire(x *txn, e *entry, to string, at time.Time, cause string) error {
	p := t.p
	t.vals = p.features.Values(p.features.NewState(), x.now, t.vals)
	for len(t.vals) < len(p.names) {
		t.vals = append(t.vals, nil) // the automatic features (traits, RFM): no value either
	}
	u := featurestore.Update{Vector: t.vector(e.id, t.vals, nil, x.now, time.Time{})}
	u.Vector.CanonicalID = to
	var err error
	if u.Exit, err = t.empty(x, e, at, "merge/"+cause, ""); err != nil {
		return err
	}
	x.updates = append(x.updates, u)
	x.pending = append(x.pending, e.id)
	return nil
}

// empty takes entity e out of every segment it is in (segment records
// with cause and reason; the exits returned for the store's update) and
// deletes its state, timer and changelog record: what a retired and a
// forgotten entity both go through.
func (t *task) empty(x *txn, e *entry, at time.Time, cause, reason string) ([]string, error) {
	p := t.p
	var exits []string
	for _, c := range p.segments.Diff(e.m, nil, nil) {
		rec := segment.NewRecord(c, entity, e.id, at, cause, nil)
		rec.Reason = reason
		b, err := rec.Encode()
		if err != nil {
			return nil, err
		}
		x.recs = append(x.recs, &kgo.Record{Topic: p.cfg.Kafka.Topics.Segments, Key: []byte(e.id), Value: b})
		exits = append(exits, c.Segment)
		x.segExit++
	}
	x.b.Delete(key(pkEntity, e.id), nil)
	if e.due != 0 {
		x.b.Delete(timerKey(e.due, e.id), nil)
	}
	x.recs = append(x.recs, t.stateRecord([]byte(clEntityPrefix+e.id), nil))
	t.dropLegacyAuto(x, e) // a record in the value goes with it
	e.autoRec, e.autoLoaded = autoRecord{}, true
	e.st, e.m, e.due, e.touched = p.features.NewState(), nil, 0, false
	return exits, nil
}

// forget deletes entity rr.To, a person deleted on request (the linker
// sends one per entity of the person): a moved entity's pointer goes; an
// entity with state leaves its segments (segment records and the store),
// and its state, timer and changelog record go; either way its vector is
// deleted from the store, and the entity keeps a marker of the deletion's
// time (below) (docs/identity.md, "Deleting a person").
func (t *task) forget(x *txn, rr resolved, cause string) error {
	id := rr.To
	u := featurestore.Update{Vector: featurestore.Vector{Entity: entity, ID: id}, Delete: true}
	to, err := t.target(x, id)
	if err != nil {
		return err
	}
	if to != id {
		x.links[id] = id
		x.b.Delete(key(pkAlias, id), nil)
		x.recs = append(x.recs, t.stateRecord([]byte(clAliasPrefix+id), nil))
	} else {
		e, err := x.touched.get(t, id)
		if err != nil {
			return err
		}
		if u.Exit, err = t.empty(x, e, rr.At, "forget/"+cause, segment.ReasonDeleted); err != nil {
			return err
		}
	}
	if err := t.forgetSeeded(x, id); err != nil {
		return err
	}
	at := rr.At
	if at.IsZero() {
		at = x.now
	}
	t.setForgot(x, id, max(1, at.UnixMilli()))
	if topic := t.p.cfg.Kafka.Topics.Deletions; topic != "" && rr.Cause != "" {
		done := deletion.Record{Request: rr.Cause, Stage: deletion.Stream, At: x.now, Index: rr.Index}
		x.recs = append(x.recs, &kgo.Record{Topic: topic, Key: done.Key(), Value: done.Encode()})
	}
	x.updates = append(x.updates, u)
	x.pending = append(x.pending, id)
	return nil
}

// forgetSeeded deletes what the seeds machinery keeps of entity id: its
// seeded marks and the events of it kept undecided until its seed comes
// (seed.go), per active feature.
func (t *task) forgetSeeded(x *txn, id string) error {
	for fp := range t.act {
		sk := seededKey(fp, id)
		if ok, err := t.has(sk); err != nil {
			return err
		} else if ok {
			x.b.Delete(sk, nil)
			x.recs = append(x.recs, t.stateRecord([]byte(clSeededPrefix+strconv.FormatUint(fp, 16)+"/"+id), nil))
		}
		// The keys first, deleted once the iterator is closed: x.b may be
		// the batch it reads (a transaction kept open).
		pre := undecidedPrefix(fp, id)
		it, err := t.reader().NewIter(&pebble.IterOptions{LowerBound: pre, UpperBound: prefixEnd(pre)})
		if err != nil {
			return err
		}
		var offs []int64
		for it.First(); it.Valid(); it.Next() {
			if _, uid, off, ok := splitUndecidedKey(it.Key()[len(pkUndec):]); ok && uid == id {
				offs = append(offs, off)
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
		for _, off := range offs {
			x.b.Delete(undecidedKey(fp, id, off), nil)
			x.recs = append(x.recs, t.stateRecord([]byte(undecidedChangelogKey(fp, id, off)), nil))
		}
	}
	return nil
}

// A forgotten entity keeps a marker (pkForgot, with the changelog) of when
// it was deleted until its next event received after that: events
// received before the deletion but applied after it (a backlog, a device's
// events forwarded on, a merge's state in flight) are dropped, not counted
// for a new entity; the first one received after it starts the entity
// anew and ends the marker.

// forgottenAt is when entity id was deleted on request (unix ms), or 0.
func (t *task) forgottenAt(x *txn, id string) (int64, error) {
	if d, ok := x.forgot[id]; ok {
		return d, nil
	}
	if t.forgot == nil || !t.forgot.MayHave(id) {
		return 0, nil
	}
	b, closer, err := t.reader().Get(key(pkForgot, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(b) != 8 {
		return 0, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// setForgot sets id's marker to d in x, or clears it (d 0).
func (t *task) setForgot(x *txn, id string, d int64) {
	if x.forgot == nil {
		x.forgot = map[string]int64{}
	}
	x.forgot[id] = d
	if d == 0 {
		x.b.Delete(key(pkForgot, id), nil)
		x.recs = append(x.recs, t.stateRecord([]byte(clForgotPrefix+id), nil))
		return
	}
	v := binary.BigEndian.AppendUint64(nil, uint64(d))
	x.b.Set(key(pkForgot, id), v, nil)
	x.recs = append(x.recs, t.stateRecord([]byte(clForgotPrefix+id), v))
	if t.forgot == nil {
		t.forgot = keyfilter.New(0)
	}
	t.forgot.Add(id) // before a later batch asks; kept if this one fails: a false positive
}

// beforeDeletion reports whether something of entity id from at (an
// event's receive time, a merge's link time) predates id's deletion: it is
// dropped. Anything later ends the marker.
func (t *task) beforeDeletion(x *txn, id string, at time.Time) (bool, error) {
	d, err := t.forgottenAt(x, id)
	if err != nil || d == 0 {
		return false, err
	}
	if at.UnixMilli() <= d {
		return true, nil
	}
	t.setForgot(x, id, 0)
	return false, nil
}

// receivedAt is when ev reached Pulse: its receivedAt, else the time of
// the record r that carried it.
func receivedAt(ev *event.Event, r *kgo.Record) time.Time {
	if !ev.ReceivedAt.IsZero() {
		return ev.ReceivedAt
	}
	return r.Timestamp
}

// receive applies a transfer or a forwarded event to its target, or
// forwards it on when the target moved.
func (t *task) receive(x *txn, r *kgo.Record, rr resolved, cause string) error {
	to, err := t.target(x, rr.To)
	if err != nil {
		return err
	}
	if to != rr.To {
		rr.To = to
		t.forward(x, rr)
		return nil
	}
	e, err := x.touched.get(t, to)
	if err != nil {
		return err
	}
	p := t.p
	if rr.Kind == resolvedTransfer {
		if drop, err := t.beforeDeletion(x, to, rr.At); err != nil || drop {
			return err // a merge's state from before the person's deletion
		}
		src, err := p.features.DecodeState(rr.State)
		if err != nil {
			x.recs = append(x.recs, t.deadLetter(r, event.ReasonUnreadable, "", err, x.now))
			return nil
		}
		if p.features.MergeAll(e.st, src) {
			e.touched, e.cause, e.at = true, "merge/"+cause, rr.At
		}
		return nil
	}
	var ev event.Event
	if err := p.records.Unmarshal(rr.Event, &ev); err != nil {
		x.recs = append(x.recs, t.deadLetter(r, event.ReasonInvalid, "", err, x.now))
		return nil
	}
	if drop, err := t.beforeDeletion(x, to, receivedAt(&ev, r)); err != nil || drop {
		if drop {
			x.counts.deleted++
		}
		return err
	}
	changed, err := p.features.Apply(e.st, &ev)
	switch {
	case errors.Is(err, aggregate.ErrTooLate):
		x.recs = append(x.recs, t.deadLetter(r, event.ReasonLate, ev.MessageID, err, x.now))
	case err != nil:
		x.recs = append(x.recs, t.deadLetter(r, event.ReasonInvalid, ev.MessageID, err, x.now))
	case changed:
		e.touched, e.cause, e.at = true, cause, ev.Timestamp
		if ev.ReceivedAt.After(e.eventAt) {
			e.eventAt = ev.ReceivedAt
		}
	}
	return nil
}
