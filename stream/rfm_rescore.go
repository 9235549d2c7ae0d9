package stream

import (
	"context"
	"encoding/binary"
	"errors"
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
// the task's timer loop switches to it under work, in one Pebble batch:
// every stored entity is queued for a re-score (q/<id>) and the version is
// recorded (pkRFMVersion, the boundaries themselves). From then on events score with the new version,
// and the timer loop works the queue off in chunks of TimerChunk, each a
// transaction like a timer's, deleting the queue keys of the entities it
// re-scored in the same Pebble batch. A group change is a segment change,
// written once: a re-score after a crash finds the membership as
// committed and changes nothing (the changelog restores a transaction that
// Pebble missed; its queue keys stay, and the repeat is a no-op).
//
// The queue and the recorded boundaries are in Pebble only, written
// without fsync, so a SIGKILL may lose the last of them: the task then
// opens with older boundaries (or none), switches again and re-scores
// again, which writes nothing twice (TestSIGKILLDuringRescore).
//
// A task opens scoring with the recorded boundaries, before anything
// else (rewritePending included), then switches when the processor knows
// another version; with none recorded (a state restored from the
// changelog alone) it queues everyone, which also sets the entities'
// recency timers.

var (
	pkRescore    = []byte("q/") // q/<id> -> nothing: re-score with t.rfmB
	pkAuto       = []byte("r/") // r/<id> -> autoRecord (auto.go)
	pkRFMVersion = []byte("mr") // rfm.Boundaries whose re-score was queued last

	mRFMRescored = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_stream_rfm_rescored_total",
		Help: "Entities re-scored after a new version of the RFM boundaries.",
	})
	mRFMQueued = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulse_stream_rfm_rescore_queued",
		Help: "Entities a partition queued for a re-score with its current boundaries, at the last switch.",
	}, []string{"partition"})
	mRFMVersion = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulse_stream_rfm_boundaries_version",
		Help: "The version of the RFM boundaries each partition scores with.",
	}, []string{"partition"})
)

// clAutoPrefix + id: the entity's automatic record (auto.go).
const clAutoPrefix = "__auto/"

// syncRFM switches the task to the processor's newest boundaries when
// they differ from its own, queueing every entity for a re-score. The
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
	}
	latest := t.p.rfmLatest.Load()
	if latest == nil || latest.Same(t.rfmB) {
		if t.rfmB != nil {
			mRFMVersion.WithLabelValues(t.lagLabel).Set(float64(t.rfmB.Version))
		}
		return nil
	}
	it, err := t.db.NewIter(&pebble.IterOptions{LowerBound: pkEntity, UpperBound: prefixEnd(pkEntity)})
	if err != nil {
		return err
	}
	b := t.db.NewBatch()
	defer b.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		b.Set(key(pkRescore, string(it.Key()[len(pkEntity):])), nil, nil)
		n++
	}
	if err := it.Close(); err != nil {
		return err
	}
	b.Set(pkRFMVersion, latest.Encode(), nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	t.rfmB = latest
	mRFMVersion.WithLabelValues(t.lagLabel).Set(float64(latest.Version))
	mRFMQueued.WithLabelValues(t.lagLabel).Set(float64(n))
	t.log.Info("rfm boundaries changed: re-scoring the partition in the background", "version", latest.Version, "entities", n)
	return nil
}

// storedBoundaries are the boundaries whose re-score the task queued
// last (nil when none): a task opens scoring with them, so a restart
// never scores without boundaries, whatever the RFM topic says yet.
func (t *task) storedBoundaries() (*rfm.Boundaries, error) {
	b, closer, err := t.db.Get(pkRFMVersion)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return rfm.DecodeBoundaries(b)
}

// rescore re-scores up to TimerChunk queued entities in one transaction;
// more reports that the queue holds more.
func (t *task) rescore(ctx context.Context) (more bool, err error) {
	t.work.Lock()
	defer t.work.Unlock()
	if t.p.rfm == nil || t.rfmB == nil {
		return false, nil
	}
	it, err := t.db.NewIter(&pebble.IterOptions{LowerBound: pkRescore, UpperBound: prefixEnd(pkRescore)})
	if err != nil {
		return false, err
	}
	var ids []string
	for it.First(); it.Valid(); it.Next() {
		if len(ids) == t.p.opts.TimerChunk {
			more = true
			break
		}
		ids = append(ids, string(it.Key()[len(pkRescore):]))
	}
	if err := it.Close(); err != nil {
		return false, err
	}
	if len(ids) == 0 {
		return false, nil
	}
	x := t.newTxn()
	defer x.abort()
	now := t.p.opts.Now()
	cause := "rfm/" + strconv.FormatInt(t.rfmB.Version, 10)
	for _, id := range ids {
		x.b.Delete(key(pkRescore, id), nil)
		ok, err := t.has(key(pkEntity, id))
		if err != nil {
			return false, err
		}
		if !ok {
			continue // deleted since it was queued
		}
		e, err := t.load(id)
		if err != nil {
			return false, err
		}
		e.cause, e.at = cause, now
		if err := t.rescoreOne(x, e, now); err != nil {
			return false, err
		}
	}
	if err := t.hook("rescore-before-commit"); err != nil {
		return false, err
	}
	if err := t.commit(ctx, x, t.meta.next); err != nil {
		return false, err
	}
	mRFMRescored.Add(float64(len(ids)))
	return more, nil
}

// rescoreChunks bounds the re-score chunks one timer tick works off, so
// batches of events interleave with a re-score of the whole partition.
const rescoreChunks = 4

// rfmTick is the timer loop's RFM work: publish the partition's summary
// and, on partition 0, the boundaries (each every refresh), switch to new
// boundaries, and work the re-score queue off (bounded).
func (t *task) rfmTick(ctx context.Context) error {
	if t.p.rfm == nil {
		return nil
	}
	if err := t.publishRFM(ctx, t.p.opts.Now()); err != nil {
		return err
	}
	t.work.Lock()
	err := t.syncRFM()
	t.work.Unlock()
	if err != nil {
		return err
	}
	for range rescoreChunks {
		more, err := t.rescore(ctx)
		if err != nil || !more {
			if err != nil {
				return err
			}
			break
		}
	}
	return nil
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
		state, _, err := splitEntityValue(cl)
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

// rescoreOne re-scores e with the task's boundaries. An entity whose
// automatic record and segments stay as they are (most of them, at a
// refresh) writes nothing but its timer (Pebble only: its local value's
// due and the timer index); any other goes through finish.
func (t *task) rescoreOne(x *txn, e *entry, now time.Time) error {
	p := t.p
	t.vals = p.features.Values(e.st, now, t.vals)
	vals, rec, err := t.autoValues(e, t.vals, now)
	if err != nil {
		return err
	}
	t.vals = vals
	m := p.segments.Eval(t.vals, now, nil)
	if !rec.equal(&e.autoRec) || len(p.segments.Diff(e.m, m, nil)) > 0 {
		return t.finish(x, e, now, false)
	}
	var due int64
	if at, ok := p.features.NextChange(e.st, now); ok {
		due = at.UnixMilli()
	}
	if due = t.rfmDue(e, t.vals, now, due); due == e.due {
		return nil
	}
	ek := key(pkEntity, e.id)
	v, closer, err := t.db.Get(ek)
	if err != nil {
		return err
	}
	local := append([]byte(nil), v...)
	closer.Close()
	if len(local) < 8 {
		return errCorrupt
	}
	binary.BigEndian.PutUint64(local, uint64(due))
	x.b.Set(ek, local, nil)
	if e.due != 0 {
		x.b.Delete(timerKey(e.due, e.id), nil)
	}
	if due != 0 {
		x.b.Set(timerKey(due, e.id), nil, nil)
	}
	e.due = due
	return nil
}
