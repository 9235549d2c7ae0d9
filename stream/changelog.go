package stream

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// fence commits a transaction holding only a fresh __restore record and
// returns its offset. Initialising the transactional producer first fences
// any older owner of the partition and aborts its open transaction, so
// everything before the fence is final: reading read_committed up to it
// sees the whole committed changelog.
func (t *task) fence(ctx context.Context) (int64, error) {
	var nonce [12]byte
	rand.Read(nonce[:])
	r := t.stateRecord([]byte(clFenceKey), []byte(hex.EncodeToString(nonce[:])))
	if err := t.prod.BeginTransaction(); err != nil {
		return 0, fmt.Errorf("cannot begin transaction: %w", err)
	}
	if err := t.prod.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.prod.EndTransaction(ctx, kgo.TryAbort)
		return 0, fmt.Errorf("cannot write the changelog fence: %w", err)
	}
	if err := t.prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return 0, fmt.Errorf("cannot commit the changelog fence: %w", err)
	}
	return r.Offset, nil
}

// restoreStall is how long a restore waits for changelog records before
// it reads again on a new client, and restoreStalls how many such waits in
// a row fail the restore (above a broker's 60 s transaction timeout).
// Variables for the tests.
var (
	restoreStall  = 10 * time.Second
	restoreStalls = 12
)

// restore replays the changelog into Pebble: after the local state's
// changelog position when has, else all of it. The replay ends at a fence
// record written just before, so it includes every committed transaction.
func (t *task) restore(ctx context.Context, has bool) error {
	fence, err := t.fence(ctx)
	if err != nil {
		return err
	}
	from := int64(0)
	if has {
		from = t.meta.changelog + 1
		if from > fence {
			// The changelog is behind the local state: the topic was
			// recreated. Local state is the truth; write it back.
			t.log.Warn("changelog is behind the local state (topic recreated?): rewriting it from local state",
				"changelog_end", fence, "local_position", t.meta.changelog)
			return t.snapshot(ctx)
		}
	}
	if from >= fence {
		t.meta.changelog = fence
		return nil
	}
	start := time.Now()
	state := t.p.cfg.Kafka.Topics.State
	reader := func(at int64) (*kgo.Client, error) {
		return kafka.NewClient(t.p.cfg.Kafka, append([]kgo.Opt{
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{state: {t.partition: kgo.NewOffset().At(at)}}),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.FetchMaxBytes(64 << 20),
			kgo.FetchMaxPartitionBytes(32 << 20),
		}, t.p.opts.KafkaOpts...)...)
	}
	cl, err := reader(from)
	if err != nil {
		return err
	}
	defer func() { cl.Close() }()
	b := t.db.NewIndexedBatch()
	defer func() { b.Close() }()
	now := t.p.opts.Now()
	n, next, stalls := 0, from, 0
	for done := false; !done; {
		pctx, cancel := context.WithTimeout(ctx, restoreStall)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fs.NumRecords() == 0 && pctx.Err() != nil {
			// Nothing for restoreStall short of the fence, which is
			// committed: a read that stalled (an old transaction's
			// records still holding the last stable offset until the
			// broker aborts it; a fetch session that went astray). Read
			// again from where it got, on a new client; give up after
			// restoreStalls, and the task is opened again.
			if stalls++; stalls >= restoreStalls {
				return fmt.Errorf("cannot read changelog %s/%d: nothing past offset %d for %s, the fence at %d", state, t.partition, next, time.Duration(stalls)*restoreStall, fence)
			}
			t.log.Warn("changelog read stalled; reading again", "at", next, "fence", fence)
			cl.Close()
			if cl, err = reader(next); err != nil {
				return err
			}
			continue
		}
		if err := fs.Err0(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("cannot read changelog %s/%d: %w", state, t.partition, err)
		}
		for it := fs.RecordIter(); !it.Done(); {
			r := it.Next()
			if r.Offset >= fence {
				done = true
				break
			}
			next, stalls = r.Offset+1, 0
			if err := t.applyChangelog(b, r, has, now); err != nil {
				return fmt.Errorf("changelog %s/%d offset %d: %w", state, t.partition, r.Offset, err)
			}
			n++
			if b.Len() > 16<<20 {
				if err := t.fault.Commit(b, pebble.NoSync); err != nil {
					return err
				}
				b.Close()
				b = t.db.NewIndexedBatch()
			}
		}
		mRestored.Add(float64(fs.NumRecords()))
	}
	t.meta.changelog = fence
	if !has {
		// Stale memberships were put on the timer index above.
		t.meta.segFP = t.p.segments.Fingerprint()
	}
	t.meta.asOf = t.p.opts.Now().UnixMilli()
	b.Set(pkMeta, t.meta.encode(), nil)
	if err := t.fault.Commit(b, pebble.Sync); err != nil {
		return err
	}
	t.log.Info("restored from changelog", "records", n, "from", from, "to", fence, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// applyChangelog applies one changelog record to the local state. With
// local, keys may already exist (catch-up), so old timers are looked up.
func (t *task) applyChangelog(b *pebble.Batch, r *kgo.Record, local bool, now time.Time) error {
	k := string(r.Key)
	switch {
	case k == clFenceKey:
	case k == clOffsetKey:
		next, pending, err := decodeOffsetValue(r.Value)
		if err != nil {
			return err
		}
		t.meta.next, t.meta.pending = next, pending
	case k == clSeedsKey:
		next, n := binary.Varint(r.Value)
		if n <= 0 {
			return errCorrupt
		}
		t.meta.seedNext = next
	case k == clInputKey:
		t.meta.input = string(r.Value)
	case k == clResolvedKey:
		next, n := binary.Varint(r.Value)
		if n <= 0 {
			return errCorrupt
		}
		t.meta.resolvedNext = next
	case strings.HasPrefix(k, clEntityPrefix):
		return t.restoreEntity(b, k[len(clEntityPrefix):], r.Value, local, now)
	case strings.HasPrefix(k, clSeenPrefix):
		return restoreSeen(b, k[len(clSeenPrefix):], r.Value)
	default:
		lk, err := localKeyOf(k)
		if err != nil || lk == nil {
			return err
		}
		if r.Value == nil {
			b.Delete(lk, nil)
		} else {
			b.Set(lk, r.Value, nil)
		}
	}
	return nil
}

// restoreEntity writes an entity's changelog value v (nil: deleted) to b
// with its timer, dropping the timer of the value it replaces when local.
func (t *task) restoreEntity(b *pebble.Batch, id string, v []byte, local bool, now time.Time) error {
	ek := key(pkEntity, id)
	if local {
		if old, closer, err := b.Get(ek); err == nil {
			due, _, err := splitLocalValue(old)
			closer.Close()
			if err != nil {
				return err
			}
			if due != 0 {
				b.Delete(timerKey(due, id), nil)
			}
		} else if !errors.Is(err, pebble.ErrNotFound) {
			return err
		}
	}
	if v == nil {
		b.Delete(ek, nil)
		return nil
	}
	state, memb, _, err := splitEntityValue(v)
	if err != nil {
		return err
	}
	if _, stale, _ := t.p.segments.DecodeMembership(memb, nil); stale {
		b.Set(timerKey(0, id), nil, nil) // rules changed since: re-evaluate
	}
	st, err := t.p.features.DecodeState(state)
	if err != nil {
		return err
	}
	var due int64
	if at, ok := t.p.features.NextChange(st, now); ok {
		due = at.UnixMilli()
		b.Set(timerKey(due, id), nil, nil)
	}
	b.Set(ek, localValue(due, v), nil)
	return nil
}

// restoreSeen writes a part of the seen ids of an input batch to b, or
// forgets them when v is nil (purged); rest is the changelog key after
// clSeenPrefix (seenChangelogKey). Each part is a key of its own, written
// and purged on its own, so a compacted changelog restores every part
// still within the allowed lateness and none purged.
func restoreSeen(b *pebble.Batch, rest string, v []byte) error {
	off, part, err := parseSeenChangelogKey(rest)
	if err != nil {
		return err
	}
	bk := seenKey(off, part)
	if v == nil {
		if old, closer, err := b.Get(bk); err == nil {
			sb, err := decodeSeenBatch(old)
			closer.Close()
			if err != nil {
				return err
			}
			for _, id := range sb.ids {
				b.Delete(key(pkSeen, id), nil)
			}
		} else if !errors.Is(err, pebble.ErrNotFound) {
			return err
		}
		b.Delete(bk, nil)
		return nil
	}
	sb, err := decodeSeenBatch(v)
	if err != nil {
		return err
	}
	at := binary.BigEndian.AppendUint64(nil, uint64(off))
	for _, id := range sb.ids {
		b.Set(key(pkSeen, id), at, nil)
	}
	b.Set(bk, v, nil)
	return nil
}

// localKeyOf is the Pebble key of the changelog key of an activation, a
// seeded mark, an undecided event or an alias, whose values are the same
// in both; nil for any other key.
func localKeyOf(k string) ([]byte, error) {
	switch {
	case strings.HasPrefix(k, clActivationPrefix):
		fp, err := strconv.ParseUint(k[len(clActivationPrefix):], 16, 64)
		if err != nil {
			return nil, err
		}
		return activationKey(fp), nil
	case strings.HasPrefix(k, clSeededPrefix):
		fph, id, ok := strings.Cut(k[len(clSeededPrefix):], "/")
		fp, err := strconv.ParseUint(fph, 16, 64)
		if !ok || err != nil {
			return nil, errCorrupt
		}
		return seededKey(fp, id), nil
	case strings.HasPrefix(k, clUndecidedPrefix):
		parts := strings.SplitN(k[len(clUndecidedPrefix):], "/", 3)
		if len(parts) != 3 {
			return nil, errCorrupt
		}
		fp, err1 := strconv.ParseUint(parts[0], 16, 64)
		off, err2 := strconv.ParseInt(parts[1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, errCorrupt
		}
		return undecidedKey(fp, parts[2], off), nil
	case strings.HasPrefix(k, clAliasPrefix):
		return key(pkAlias, k[len(clAliasPrefix):]), nil
	case strings.HasPrefix(k, clForgotPrefix):
		return key(pkForgot, k[len(clForgotPrefix):]), nil
	case strings.HasPrefix(k, clAutoPrefix):
		return key(pkAuto, k[len(clAutoPrefix):]), nil
	}
	return nil, nil
}

// wipe drops the partition's state: tombstones for every key in the
// changelog, then the local keys. The task restarts from offset 0.
func (t *task) wipe(ctx context.Context) error {
	var keys [][]byte
	err := t.eachLocal(func(k, _ []byte) error {
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		return err
	}
	for len(keys) > 0 {
		n := min(len(keys), 10000)
		x := t.newTxn()
		for _, k := range keys[:n] {
			x.recs = append(x.recs, t.stateRecord(k, nil))
		}
		keys = keys[n:]
		if err := t.commit(ctx, x, 0); err != nil {
			return err
		}
	}
	if err := t.clearLocal(); err != nil {
		return err
	}
	clear(t.cache)
	if err := t.commit(ctx, t.newTxn(), 0); err != nil {
		return err
	}
	// The state starts over: every feature counts from offset 0, and seeds
	// cut for the old activations are stale.
	return t.activate(ctx)
}

// snapshot writes the whole local state to the changelog.
func (t *task) snapshot(ctx context.Context) error {
	x := t.newTxn()
	defer func() { x.abort() }() // the last one
	err := t.eachLocal(func(k, v []byte) error {
		x.recs = append(x.recs, t.stateRecord(k, v))
		if len(x.recs) >= 10000 {
			if err := t.commit(ctx, x, t.meta.next); err != nil {
				return err
			}
			x = t.newTxn()
		}
		return nil
	})
	if err != nil {
		return err
	}
	x.recs = append(x.recs, t.stateRecord([]byte(clSeedsKey), binary.AppendVarint(nil, t.meta.seedNext)),
		t.stateRecord([]byte(clResolvedKey), binary.AppendVarint(nil, t.meta.resolvedNext)))
	return t.commit(ctx, x, t.meta.next)
}

// eachLocal calls f with the changelog key and value of every entity, seen
// batch, alias, activation and seeded mark in Pebble.
func (t *task) eachLocal(f func(k, v []byte) error) error {
	for _, pre := range [][]byte{pkEntity, pkBatch, pkAlias, pkActive, pkSeeded, pkUndec, pkAuto, pkForgot} {
		it, err := t.reader().NewIter(&pebble.IterOptions{LowerBound: pre, UpperBound: prefixEnd(pre)})
		if err != nil {
			return err
		}
		for it.First(); it.Valid(); it.Next() {
			rest := it.Key()[len(pre):]
			v := append([]byte(nil), it.Value()...)
			var k string
			switch string(pre) {
			case string(pkEntity):
				k = clEntityPrefix + string(rest)
				_, cl, err := splitLocalValue(v)
				if err != nil {
					it.Close()
					return err
				}
				v = cl
			case string(pkBatch):
				off, part, ok := splitSeenKey(rest)
				if !ok {
					it.Close()
					return errCorrupt
				}
				k = seenChangelogKey(off, part)
			case string(pkActive):
				k = clActivationPrefix + strconv.FormatUint(beUint64(rest), 16)
			case string(pkSeeded):
				k = clSeededPrefix + strconv.FormatUint(beUint64(rest), 16) + "/" + string(rest[8:])
			case string(pkUndec):
				fp, id, off, ok := splitUndecidedKey(rest)
				if !ok {
					it.Close()
					return errCorrupt
				}
				k = undecidedChangelogKey(fp, id, off)
			case string(pkAuto):
				k = clAutoPrefix + string(rest)
			case string(pkForgot):
				k = clForgotPrefix + string(rest)
			default:
				k = clAliasPrefix + string(rest)
			}
			if err := f([]byte(k), v); err != nil {
				it.Close()
				return err
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	return nil
}
