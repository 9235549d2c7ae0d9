package stream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"runtime"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/pulse-rt/pulse/rfm"
)

// Boundary versions and re-scores.
//
// A task scores with one version of the boundaries at a time (t.rfmB).
// When the processor learns a newer version (rfm topic, rfm_topic.go),
// the task's timer loop switches to it under work, in one small Pebble
// batch: the version (pkRFMVersion, the boundaries themselves) and a
// re-score cursor (pkRescoreCursor: that version and the last entity
// re-scored, none yet). From then on events score with the new version,
// and the timer loop walks the stored entities (e/) from the cursor in
// key order, chunk after chunk, until the walk reaches the end, when the
// cursor is deleted. An entity written by an event after the switch is
// scored with the new version already: the walk finds nothing to change.
//
// A chunk stops after about rescoreBudget of work, its commit included
// (or TimerChunk entities), so an event batch never waits long for work;
// between chunks a waiting batch takes work first (task.waiting), and
// the timer loop's own work (seeds, due timers) comes at every tick. The
// chunks of all tasks share max(1, GOMAXPROCS/2) slots
// (Processor.rescoreSlots), so a re-score leaves serving half the cores.
//
// The chunk's changes and its advanced cursor are one Pebble batch. A
// chunk that changed a membership, an automatic record or a vector
// commits it as a timer's transaction does (Kafka first, t.commit); one
// that changed nothing but timers (most of them, at a refresh) commits to
// Pebble only, as the timers and the cursor are local state: no
// transaction, and the input offset and changelog position (meta) stay as
// they are. A group change is a segment change, written once: a crash
// before the chunk's Pebble commit re-does the chunk from the cursor, and
// the re-score finds the memberships as committed (the changelog restores
// a transaction that Pebble missed) and changes nothing.
//
// The cursor and the recorded boundaries are in Pebble only, written
// without fsync, so a SIGKILL may lose the last of them: the task then
// opens with older boundaries (or none) or an older cursor, switches or
// walks again, and writes nothing twice (TestSIGKILLDuringRescore).
//
// A task opens scoring with the recorded boundaries, before anything
// else (rewritePending included), then switches when the processor knows
// another version; with none recorded (a state restored from the
// changelog alone) it re-scores everyone, which also sets the entities'
// recency timers. Builds before the cursor queued a key per entity (q/);
// a task that opens with any deletes them and re-scores everyone.

var (
	pkRescoreOld    = []byte("q/") // q/<id> of older builds: deleted on open
	pkAuto          = []byte("r/") // r/<id> -> autoRecord of older builds (auto.go): read, then deleted
	pkRFMVersion    = []byte("mr") // rfm.Boundaries whose re-score was started last
	pkRescoreCursor = []byte("mc") // version (8 bytes BE) + last entity re-scored; absent: no re-score to do

	mRFMRescored = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_stream_rfm_rescored_total",
		Help: "Entities re-scored after a new version of the RFM boundaries.",
	})
	mRFMQueued = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulse_stream_rfm_rescore_queued",
		Help: "Entities the partition's re-score with its current boundaries has walked so far (since the switch, or since this process opened the partition); the partition's entity count once the walk is done.",
	}, []string{"partition"})
	mRFMVersion = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulse_stream_rfm_boundaries_version",
		Help: "The version of the RFM boundaries each partition scores with.",
	}, []string{"partition"})
)

// clAutoPrefix + id: the entity's automatic record as older builds kept it
// (auto.go); now part of the entity's value, and deleted here when the
// entity is next written.
const clAutoPrefix = "__auto/"

// rescoreBudget is about how long one re-score chunk holds the task's
// work, its commit included.
const rescoreBudget = 10 * time.Millisecond

// rescoreCursor is where a re-score stands: the version it re-scores
// with and the last entity done ("": none yet).
type rescoreCursor struct {
	version int64
	after   string
}

func (c rescoreCursor) encode() []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(c.version)), c.after...)
}

func decodeRescoreCursor(b []byte) (rescoreCursor, error) {
	if len(b) < 8 {
		return rescoreCursor{}, errCorrupt
	}
	return rescoreCursor{version: int64(binary.BigEndian.Uint64(b)), after: string(b[8:])}, nil
}

// syncRFM switches the task to the processor's newest boundaries when
// they differ from its own, starting a re-score of every entity. The
// caller holds work (or the task is not running yet).
func (t *task) syncRFM() error {
	if t.p.rfm == nil {
		return nil
	}
	if t.rfmB == nil { // opening: what the state was scored with
		b, err := t.storedBoundaries()
		if err != nil {
			return err
		}
		t.rfmB = b
		if err := t.dropOldQueue(); err != nil {
			return err
		}
		// A re-score the last owner left unfinished goes on from its
		// cursor (unless newer boundaries restart it below).
		if c, ok, err := t.cursor(); err != nil {
			return err
		} else if ok && b != nil && c.version == b.Version {
			t.log.Info("rfm re-score resumed", "version", c.version, "after", c.after)
		}
	}
	latest := t.p.rfmLatest.Load()
	if latest == nil || latest.Same(t.rfmB) {
		if t.rfmB != nil {
			mRFMVersion.WithLabelValues(t.lagLabel).Set(float64(t.rfmB.Version))
		}
		return nil
	}
	b := t.db.NewBatch()
	defer b.Close()
	b.Set(pkRFMVersion, latest.Encode(), nil)
	b.Set(pkRescoreCursor, rescoreCursor{version: latest.Version}.encode(), nil)
	if err := t.fault.Commit(b, pebble.NoSync); err != nil {
		return err
	}
	t.rfmB = latest
	mRFMVersion.WithLabelValues(t.lagLabel).Set(float64(latest.Version))
	mRFMQueued.WithLabelValues(t.lagLabel).Set(0)
	t.log.Info("rfm boundaries changed: re-scoring the partition in the background", "version", latest.Version)
	return nil
}

// dropOldQueue deletes the re-score queue of a build from before the
// cursor (q/<id>) and, when it held any, starts a re-score of everyone
// with the recorded boundaries: a superset of what was queued, and
// re-scoring an entity twice changes nothing.
func (t *task) dropOldQueue() error {
	it, err := t.reader().NewIter(&pebble.IterOptions{LowerBound: pkRescoreOld, UpperBound: prefixEnd(pkRescoreOld)})
	if err != nil {
		return err
	}
	found := it.First()
	if err := it.Close(); err != nil || !found {
		return err
	}
	b := t.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(pkRescoreOld, prefixEnd(pkRescoreOld), nil); err != nil {
		return err
	}
	if t.rfmB != nil {
		b.Set(pkRescoreCursor, rescoreCursor{version: t.rfmB.Version}.encode(), nil)
	}
	t.log.Info("re-score queue of an older build found: re-scoring the partition from the start")
	return t.fault.Commit(b, pebble.NoSync)
}

// storedBoundaries are the boundaries whose re-score the task started
// last (nil when none): a task opens scoring with them, so a restart
// never scores without boundaries, whatever the RFM topic says yet.
func (t *task) storedBoundaries() (*rfm.Boundaries, error) {
	b, closer, err := t.reader().Get(pkRFMVersion)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return rfm.DecodeBoundaries(b)
}

// cursor is the re-score's cursor; ok is false when there is no re-score
// to do.
func (t *task) cursor() (c rescoreCursor, ok bool, err error) {
	b, closer, err := t.reader().Get(pkRescoreCursor)
	if errors.Is(err, pebble.ErrNotFound) {
		return rescoreCursor{}, false, nil
	}
	if err != nil {
		return rescoreCursor{}, false, err
	}
	defer closer.Close()
	c, err = decodeRescoreCursor(b)
	return c, err == nil, err
}

// rescoreSlots is the processor-wide semaphore of the re-score chunks:
// max(1, GOMAXPROCS/2) run at a time, across tasks.
func (p *Processor) rescoreSlots() chan struct{} {
	p.rescoreOnce.Do(func() { p.rescoreSem = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2)) })
	return p.rescoreSem
}

// rescore re-scores one chunk of entities from the cursor, in one Pebble
// batch with the advanced cursor (and one transaction when the chunk
// changed what the changelog holds); more reports that the walk goes on.
func (t *task) rescore(ctx context.Context) (more bool, err error) {
	slots := t.p.rescoreSlots()
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-slots }()
	t.work.Lock()
	defer t.work.Unlock()
	if t.workFailed.Load() {
		return false, errBroken // not even a chunk of local timers (commit)
	}
	defer t.failOnError(&err)
	start := time.Now()
	if t.p.rfm == nil || t.rfmB == nil {
		return false, nil
	}
	c, ok, err := t.cursor()
	if err != nil || !ok {
		return false, err
	}
	if c.version != t.rfmB.Version { // not written so; start over rather than miss anyone
		c = rescoreCursor{version: t.rfmB.Version}
	}
	lower := pkEntity
	if c.after != "" {
		lower = append(key(pkEntity, c.after), 0)
	}
	it, err := t.reader().NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(pkEntity)})
	if err != nil {
		return false, err
	}
	defer it.Close()
	// The automatic records walk beside the entities (same ids, same
	// order): cheaper than a Get each.
	autoLower := pkAuto
	if c.after != "" {
		autoLower = append(key(pkAuto, c.after), 0)
	}
	autos, err := t.reader().NewIter(&pebble.IterOptions{LowerBound: autoLower, UpperBound: prefixEnd(pkAuto)})
	if err != nil {
		return false, err
	}
	defer autos.Close()
	autos.First()
	x := t.newTxn()
	defer x.abort()
	now := t.p.opts.Now()
	cause := "rfm/" + strconv.FormatInt(t.rfmB.Version, 10)
	// The walk leaves room for the commit: as long as the last one took.
	stop := t.p.opts.RescoreBudget - t.rescoreCommit
	n, changed := 0, false
	for it.First(); it.Valid(); it.Next() {
		if n == t.p.opts.TimerChunk || (n > 0 && time.Since(start) >= stop) {
			more = true
			break
		}
		id := string(it.Key()[len(pkEntity):])
		e := t.cache[id]
		if e != nil {
			e.cause, e.at, e.eventAt, e.touched = "", time.Time{}, time.Time{}, false
		} else if e, err = t.decodeEntry(id, it.Value()); err != nil {
			return false, err
		}
		if !e.autoLoaded {
			rec, err := nextAuto(autos, id)
			if err != nil {
				return false, err
			}
			e.setLegacyAuto(rec)
		}
		e.cause, e.at = cause, now
		ch, err := t.rescoreOne(x, e, now, it.Value())
		if err != nil {
			return false, err
		}
		changed = changed || ch
		c.after = id
		n++
	}
	if err := it.Error(); err != nil {
		return false, err
	}
	if more {
		x.b.Set(pkRescoreCursor, c.encode(), nil)
	} else {
		x.b.Delete(pkRescoreCursor, nil)
	}
	if err := t.hook("rescore-before-commit"); err != nil {
		return false, err
	}
	committing := time.Now()
	if changed {
		x.lateStore = true
		err = t.commit(ctx, x, t.meta.next)
	} else {
		// Timers and the cursor only: local state, no transaction, and
		// meta (input offset, changelog position) as it is.
		err = t.fault.Commit(x.b, pebble.NoSync)
	}
	if err != nil {
		return false, err
	}
	t.rescoreCommit = min(time.Since(committing), t.p.opts.RescoreBudget/2)
	mRFMRescored.Add(float64(n))
	mRFMQueued.WithLabelValues(t.lagLabel).Add(float64(n))
	if !more {
		t.log.Info("rfm re-score done", "version", t.rfmB.Version)
	}
	return more, nil
}

// nextAuto moves autos (an iterator over r/, in key order) to id's
// automatic record and decodes it: zero when the entity has none.
func nextAuto(autos *pebble.Iterator, id string) (autoRecord, error) {
	k := key(pkAuto, id)
	for n := 0; autos.Valid() && bytes.Compare(autos.Key(), k) < 0; n++ {
		if n == 4 { // a run of records with no entity: jump
			autos.SeekGE(k)
			break
		}
		autos.Next()
	}
	if err := autos.Error(); err != nil {
		return autoRecord{}, err
	}
	if !autos.Valid() || !bytes.Equal(autos.Key(), k) {
		return autoRecord{}, nil
	}
	return decodeAutoRecord(autos.Value())
}

// rescoreFor re-scores chunk after chunk until the walk is done, for
// about d, or until ctx ends; between chunks a batch waiting for work
// goes first. more reports that the walk goes on.
func (t *task) rescoreFor(ctx context.Context, d time.Duration) (more bool, err error) {
	until := time.Now().Add(d)
	for {
		if more, err = t.rescore(ctx); err != nil || !more {
			return more, err
		}
		// Batches back to back (a backlog) hold the re-score back, but
		// not the timer loop's own work: it comes back after d.
		for t.waiting.Load() > 0 && ctx.Err() == nil && time.Now().Before(until) {
			time.Sleep(50 * time.Microsecond)
		}
		if ctx.Err() != nil || !time.Now().Before(until) {
			return true, nil
		}
	}
}

// rfmTick is the timer loop's RFM work: publish the partition's summary
// and, on partition 0, the boundaries (each every refresh), switch to new
// boundaries, and re-score for up to a timer interval; more reports that
// the re-score goes on (the timer loop calls again without waiting for
// the tick).
func (t *task) rfmTick(ctx context.Context) (more bool, err error) {
	if t.p.rfm == nil {
		return false, nil
	}
	if err := t.publishRFM(ctx, t.p.opts.Now()); err != nil {
		return false, err
	}
	t.work.Lock()
	err = t.syncRFM()
	t.work.Unlock()
	if err != nil {
		return false, err
	}
	return t.rescoreFor(ctx, t.p.cfg.Stream.TimerInterval.D())
}

// rfmValues reads every stored entity's recency, frequency and monetary
// values (buyers only), as of now, from a Pebble snapshot: no lock held.
// It also counts the buyers into grid under the task's boundaries (when
// it has some) and the prospects.
func (t *task) rfmValues(now time.Time, grid rfm.Grid, prospects *int64) (r, f, m []float64, err error) {
	s := t.p.rfm
	snap := t.db.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: pkEntity, UpperBound: prefixEnd(pkEntity)})
	if err != nil {
		return nil, nil, nil, err
	}
	defer it.Close()
	var vals []any
	for it.First(); it.Valid(); it.Next() {
		_, cl, err := splitLocalValue(it.Value())
		if err != nil {
			return nil, nil, nil, err
		}
		state, _, _, err := splitEntityValue(cl)
		if err != nil {
			return nil, nil, nil, err
		}
		st, err := t.p.features.DecodeState(state)
		if err != nil {
			return nil, nil, nil, err
		}
		vals = t.p.features.Values(st, now, vals)
		rv, ok := number(vals[s.r])
		if !ok || rv < 0 {
			if !st.Empty() {
				*prospects++
			}
			continue
		}
		fv, _ := number(vals[s.f])
		mv, _ := number(vals[s.m])
		r, f, m = append(r, rv), append(f, fv), append(m, mv)
		if t.rfmB.Usable() {
			grid.Add(t.rfmB, rv, fv, mv)
		}
	}
	return r, f, m, it.Error()
}

// summary is the partition's rfm.Summary as of now.
func (t *task) summary(now time.Time) (*rfm.Summary, error) {
	grid := rfm.Grid{}
	var prospects int64
	r, f, m, err := t.rfmValues(now, grid, &prospects)
	if err != nil {
		return nil, err
	}
	s := &rfm.Summary{Partition: t.partition, R: rfm.Summarize(r, rfm.DefaultK), F: rfm.Summarize(f, rfm.DefaultK),
		M: rfm.Summarize(m, rfm.DefaultK), At: now.UTC(), Prospects: prospects}
	if t.rfmB.Usable() {
		s.Version, s.Grid = t.rfmB.Version, grid.Cells()
	}
	return s, nil
}

var mRFMPublished = promauto.NewCounter(prometheus.CounterOpts{
	Name: "pulse_stream_rfm_boundaries_published_total",
	Help: "Versions of the RFM boundaries this processor published (from partition 0's task).",
})

// rescoreOne re-scores e, whose stored local value is local, with the
// task's boundaries; changed reports that it went through finish. An
// entity whose automatic record and segments stay as they are (most of
// them, at a refresh) writes nothing but its timer (Pebble only: its
// local value's due and the timer index).
func (t *task) rescoreOne(x *txn, e *entry, now time.Time, local []byte) (changed bool, err error) {
	p := t.p
	t.vals = p.features.Values(e.st, now, t.vals)
	vals, rec, err := t.autoValues(e, t.vals, now)
	if err != nil {
		return false, err
	}
	t.vals = vals
	m := p.segments.Eval(t.vals, now, nil)
	if !rec.equal(&e.autoRec) || len(p.segments.Diff(e.m, m, nil)) > 0 {
		return true, t.finish(x, e, now, false)
	}
	var due int64
	if at, ok := p.features.NextChange(e.st, now); ok {
		due = at.UnixMilli()
	}
	if due = t.rfmDue(e, t.vals, now, due); due == e.due {
		return false, nil
	}
	if len(local) < 8 {
		return false, errCorrupt
	}
	ek := key(pkEntity, e.id)
	op := x.b.SetDeferred(len(ek), len(local))
	copy(op.Key, ek)
	copy(op.Value, local)
	binary.BigEndian.PutUint64(op.Value, uint64(due))
	op.Finish()
	if e.due != 0 {
		x.b.Delete(timerKey(e.due, e.id), nil)
	}
	if due != 0 {
		x.b.Set(timerKey(due, e.id), nil, nil)
	}
	e.due = due
	return false, nil
}
