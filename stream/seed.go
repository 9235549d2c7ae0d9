package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Seeds: how a feature added to the config gets the history from before.
//
// A task records, per feature fingerprint, the first input offset it
// processed with that feature (its activation), in Pebble, in the changelog
// and on the activations topic, in one transaction. Backfill aggregates
// the history of each partition before that offset and sends one seed per
// entity to the seeds topic, same partition. The task merges a seed's
// state of a feature into the entity's once (a seeded mark per entity and
// fingerprint) and only when the seed was cut at the task's activation, so
// the events before the activation come from the seed and those after from
// the stream, none twice. The seeds-topic offset, the marks and the states
// are committed together, so a crash neither loses nor repeats a seed.

var mSeeds = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "pulse_stream_seeds_total",
	Help: "Seeded feature states by result: merged, already (the entity was seeded for the feature before), stale (cut at another offset than the task's activation), invalid, deleted (of an entity deleted on request).",
}, []string{"result"})

// loadActivations reads the activations of the local state.
func (t *task) loadActivations() error {
	t.act = map[uint64]int64{}
	it, err := t.reader().NewIter(&pebble.IterOptions{LowerBound: pkActive, UpperBound: prefixEnd(pkActive)})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[len(pkActive):]
		if len(k) != 8 {
			continue
		}
		off, err := strconv.ParseInt(string(it.Value()), 10, 64)
		if err != nil {
			it.Close()
			return fmt.Errorf("activation: %w", errCorrupt)
		}
		t.act[binary.BigEndian.Uint64(k)] = off
	}
	return it.Close()
}

// activate records the features the state has never counted: they start
// at the next input offset. A task's first start activates every feature
// at the partition's first offset: nothing to seed, unless retention
// deleted events the history still holds, which a backfill then seeds.
func (t *task) activate(ctx context.Context) error {
	if err := t.loadActivations(); err != nil {
		return err
	}
	at := t.meta.next
	if at == 0 {
		start, ok, err := t.out.startOffset(ctx)
		if err != nil {
			return err
		}
		if ok {
			at = start
		}
	}
	x := t.newTxn()
	defer x.abort()
	names := t.p.features.Names()
	var added []string
	for i := range names {
		fp, ok := t.p.features.Fingerprint(i)
		if _, have := t.act[fp]; !ok || have {
			continue
		}
		t.act[fp] = at
		v := []byte(strconv.FormatInt(at, 10))
		x.b.Set(activationKey(fp), v, nil)
		x.recs = append(x.recs,
			t.stateRecord([]byte(clActivationPrefix+strconv.FormatUint(fp, 16)), v),
			&kgo.Record{Topic: t.p.cfg.Kafka.Topics.Activations, Partition: t.partition, Key: kafka.ActivationKey(t.partition, fp), Value: v})
		added = append(added, names[i])
	}
	if len(added) == 0 {
		return nil
	}
	if err := t.commit(ctx, x, t.meta.next); err != nil {
		return fmt.Errorf("cannot record feature activations: %w", err)
	}
	t.log.Info("features activated: they count from this offset; `pulse backfill features` seeds the history before it",
		"features", added, "offset", at)
	return nil
}

// openSeeds starts reading the partition's seeds from the stored offset.
func (t *task) openSeeds() error {
	var err error
	t.seeds, err = kafka.NewClient(t.p.cfg.Kafka, append([]kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			t.p.cfg.Kafka.Topics.Seeds: {t.partition: kgo.NewOffset().At(t.meta.seedNext)},
		}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(16 << 20),
	}, t.p.opts.KafkaOpts...)...)
	return err
}

// pollSeeds applies the seeds fetched so far, if any.
func (t *task) pollSeeds(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
	fs := t.seeds.PollRecords(pctx, 5000)
	cancel()
	fs.EachError(func(topic string, p int32, err error) {
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			t.log.Debug("seeds fetch error", "topic", topic, "err", err)
		}
	})
	recs := fs.Records()
	if len(recs) == 0 {
		return nil
	}
	return t.applySeeds(ctx, recs)
}

// applySeeds merges seeds into the entities' states and commits them with
// the seeds offset, the marks, the vectors and segments, as a batch of
// events would be.
func (t *task) applySeeds(ctx context.Context, recs []*kgo.Record) (err error) {
	t.work.Lock()
	defer t.work.Unlock()
	defer t.failOnError(&err)
	p := t.p
	now := p.opts.Now()
	x := t.newTxn()
	defer x.abort()
	var touched touchedSet
	marked := map[string]bool{}
	next := t.meta.seedNext
	var merged, already, stale, invalid, deleted int
	for _, r := range recs {
		if r.Offset < next {
			continue // applied already (a fetch from before a reopen)
		}
		next = r.Offset + 1
		id := string(r.Key)
		cuts, state, err := aggregate.DecodeSeed(r.Value)
		var src *aggregate.State
		if err == nil {
			src, err = p.features.DecodeState(state)
		}
		if err != nil || id == "" {
			t.log.Warn("ignoring an unreadable seed", "offset", r.Offset, "entity", id, "err", err)
			invalid++
			continue
		}
		// A seed of an entity deleted on request is its history from
		// before the deletion: dropped (while its marker lasts).
		if d, err := t.forgottenAt(x, id); err != nil {
			return err
		} else if d != 0 {
			deleted++
			continue
		}
		// A seed of an entity merged into another person (identity.go)
		// is that person's history: merged and settled apart, then sent
		// to the person's task as a transfer.
		to, err := t.target(x, id)
		if err != nil {
			return err
		}
		var moved *entry
		if to != id {
			moved = &entry{id: id, st: p.features.NewState()}
		}
		for _, c := range cuts {
			if act, ok := t.act[c.Fingerprint]; !ok || act != c.Cut {
				stale++
				continue
			}
			sk := seededKey(c.Fingerprint, id)
			done := marked[string(sk)]
			if !done {
				if done, err = t.has(sk); err != nil {
					return err
				}
			}
			if done {
				already++
				continue
			}
			marked[string(sk)] = true
			mark := binary.AppendVarint(nil, c.Seen)
			x.b.Set(sk, mark, nil)
			x.recs = append(x.recs, t.stateRecord([]byte(clSeededPrefix+strconv.FormatUint(c.Fingerprint, 16)+"/"+id), mark))
			merged++
			e := moved
			if e == nil {
				if e, err = touched.get(t, id); err != nil {
					return err
				}
			}
			changed := p.features.Merge(e.st, src, c.Fingerprint)
			settled, err := t.settle(x, e, c)
			if err != nil {
				return err
			}
			if changed || settled {
				e.touched = true
				e.cause = "seed/" + p.cfg.Kafka.Topics.Seeds + "/" + strconv.Itoa(int(t.partition)) + "/" + strconv.FormatInt(r.Offset, 10)
				e.at = now
			}
		}
		if moved != nil && !moved.st.Empty() {
			t.forward(x, resolved{Kind: resolvedTransfer, From: id, To: to, At: now, State: moved.st.AppendBinary(nil)})
		}
	}
	if next == t.meta.seedNext {
		return nil
	}
	for _, e := range touched.order {
		if !e.touched {
			continue
		}
		if err := t.finish(x, e, now, false); err != nil {
			return err
		}
	}
	x.recs = append(x.recs, t.stateRecord([]byte(clSeedsKey), binary.AppendVarint(nil, next)))
	t.mu.Lock()
	t.meta.seedNext = next
	t.mu.Unlock()
	if err := t.hook("seeds-before-commit"); err != nil {
		return err
	}
	if err := t.commit(ctx, x, t.meta.next); err != nil {
		return err
	}
	mSeeds.WithLabelValues("merged").Add(float64(merged))
	mSeeds.WithLabelValues("already").Add(float64(already))
	mSeeds.WithLabelValues("stale").Add(float64(stale))
	mSeeds.WithLabelValues("invalid").Add(float64(invalid))
	mSeeds.WithLabelValues("deleted").Add(float64(deleted))
	if merged > 0 {
		t.log.Info("seeds merged", "features_entities", merged, "already_seeded", already, "stale", stale, "next_seed_offset", next)
	}
	return nil
}

// seenAt looks a message id up among the seen ones: at is the last input
// offset of the batch that saw it, -1 when unknown (stored by a version
// that did not record it).
func (t *task) seenAt(id string) (seen bool, at int64, err error) {
	v, closer, err := t.reader().Get(key(pkSeen, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return true, -1, nil
	}
	return true, int64(binary.BigEndian.Uint64(v)), nil
}

// activatedAfter lists the features activated after offset at: a
// duplicate of an event seen at (or before) at was never counted by them.
//
// Who counts such a duplicate for them, the seed or the stream? Backfill
// leaves out of a seed the events with a copy in [cut, seen) of the
// partition (seen: how far ClickHouse held it when the seed was made), as
// the seed says; the stream counts those, and the seed the others. The
// stream thus counts a duplicate at offset o for a feature once it knows
// the entity's seed: if o < seen. Until the seed comes the event waits
// under pkUndec (crossCut); the seed settles it (settle).
func (t *task) activatedAfter(at int64) []uint64 {
	if at < 0 {
		return nil
	}
	var fps []uint64
	for fp, act := range t.act {
		if act > at {
			fps = append(fps, fp)
		}
	}
	return fps
}

// crossCut takes a duplicate, at input record r, of an event from before
// the activation of the features fps: it is applied now for those whose
// seed came and says so, and kept undecided for those still waiting for one.
func (t *task) crossCut(x *txn, id string, st *aggregate.State, ev *event.Event, r *kgo.Record, fps []uint64) (bool, error) {
	var now []uint64
	for _, fp := range fps {
		v, closer, err := t.reader().Get(seededKey(fp, id))
		if err == nil {
			seen, n := binary.Varint(v)
			closer.Close()
			if n > 0 && r.Offset < seen {
				now = append(now, fp)
			}
			continue
		}
		if !errors.Is(err, pebble.ErrNotFound) {
			return false, err
		}
		x.b.Set(undecidedKey(fp, id, r.Offset), r.Value, nil)
		x.recs = append(x.recs, t.stateRecord([]byte(undecidedChangelogKey(fp, id, r.Offset)), r.Value))
	}
	if len(now) == 0 {
		return false, nil
	}
	return t.applyTo(st, ev, now)
}

// settle applies, for the feature of cut c, the entity's undecided
// duplicates the seed left out (offset < c.Seen) and forgets them all.
func (t *task) settle(x *txn, e *entry, c aggregate.SeedCut) (changed bool, err error) {
	pre := undecidedPrefix(c.Fingerprint, e.id)
	it, err := t.reader().NewIter(&pebble.IterOptions{LowerBound: pre, UpperBound: prefixEnd(pre)})
	if err != nil {
		return false, err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		fp, id, off, ok := splitUndecidedKey(it.Key()[len(pkUndec):])
		if !ok || id != e.id {
			continue // another id sharing the prefix bytes cannot: the length leads
		}
		x.b.Delete(append([]byte(nil), it.Key()...), nil)
		x.recs = append(x.recs, t.stateRecord([]byte(undecidedChangelogKey(fp, id, off)), nil))
		if off >= c.Seen {
			continue // the seed counted the original
		}
		ev, err := event.Unmarshal(it.Value())
		if err != nil {
			continue
		}
		ch, err := t.applyTo(e.st, ev, []uint64{fp})
		if err != nil {
			continue // too late: the stream would refuse it too
		}
		changed = changed || ch
	}
	return changed, it.Error()
}

func undecidedChangelogKey(fp uint64, id string, offset int64) string {
	return clUndecidedPrefix + strconv.FormatUint(fp, 16) + "/" + strconv.FormatInt(offset, 10) + "/" + id
}

// applyTo applies ev to st's features with the given fingerprints only.
func (t *task) applyTo(st *aggregate.State, ev *event.Event, fps []uint64) (bool, error) {
	tmp := t.p.features.NewState()
	changed, err := t.p.features.Apply(tmp, ev)
	if err != nil || !changed {
		return false, err
	}
	changed = false
	for _, fp := range fps {
		if t.p.features.Merge(st, tmp, fp) {
			changed = true
		}
	}
	return changed, nil
}
