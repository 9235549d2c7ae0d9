package backfill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/history"
)

// FeaturesOptions select what Features replays and writes.
type FeaturesOptions struct {
	// Features names the features to write; empty writes all user
	// features. Other features of the stored vectors are kept.
	Features []string
	// Since replays only events from this time on. Windows reaching back
	// before it, and lifetime features, then count only part of the
	// history. Zero replays everything.
	Since time.Time
	// Now is the time values are computed as of. Default time.Now().
	Now time.Time
	// Entities restricts the backfill to these ids.
	Entities []string
	// BatchSize is the number of vectors per store write. Default 1000.
	BatchSize int
	// Progress receives progress lines (stderr in the CLI); nil is quiet.
	Progress io.Writer
}

// FeaturesReport says what Features did.
type FeaturesReport struct {
	Entities, Events int64
	TooLate          int64 // events the stream's allowed lateness would also refuse
	Elapsed          time.Duration
}

// Features replays the history through the feature definitions of cfg and
// writes each entity's values as of opts.Now to the online store, merged
// into the stored vector (its segments and other features are kept). With
// identity resolution on, an id linked into a person counts for the
// person's canonical id, as online.
func Features(ctx context.Context, cfg *config.Config, r *history.Reader, store featurestore.Store, opts FeaturesOptions) (FeaturesReport, error) {
	var rep FeaturesReport
	set, idx, err := compile(cfg, opts.Features)
	if err != nil {
		return rep, err
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	names := set.Names()
	var entities, events atomic.Int64
	start := time.Now()
	p := newProgress(opts.Progress, "backfill features", func() string {
		ev := events.Load()
		return fmt.Sprintf("%d entities, %d events, %.0f events/s", entities.Load(), ev, float64(ev)/time.Since(start).Seconds())
	})

	var batch []pending
	write := func(batch []pending) error { return writeVectors(ctx, store, set.Entity(), opts.Now, batch) }

	// Entities replay on every core into one batch; a full batch is
	// written by the worker that filled it while the others go on (the
	// store is safe for concurrent use, and batches hold other entities).
	var (
		mu      sync.Mutex
		tooLate atomic.Int64
		// One State per worker, reset between entities: a fresh one
		// grows every feature's tiles again, slice by slice.
		states = sync.Pool{New: func() any { return set.NewState() }}
	)
	ppl, err := loadPeople(ctx, cfg, r)
	if err != nil {
		return rep, err
	}
	// A person of several ids (identity) gets each id's partial State,
	// merged and written under the canonical id once all are read.
	parts := newPartials[string](set)
	partNewest := map[string]time.Time{}
	values := func(st *aggregate.State) map[string]any {
		vals := set.Values(st, opts.Now, nil)
		m := make(map[string]any, len(idx))
		for _, i := range idx {
			m[names[i]] = vals[i]
		}
		return m
	}
	defer replayGC()()
	err = r.EachEntity(ctx, replayFilter(set, history.EventFilter{Since: opts.Since, Until: opts.Now, Entities: opts.Entities, Workers: runtime.GOMAXPROCS(0)}),
		func(id string, evs []*event.Event) error {
			st := states.Get().(*aggregate.State)
			defer func() { st.Reset(); states.Put(st) }()
			var newest time.Time
			for _, e := range evs {
				if _, err := set.Apply(st, e); err != nil {
					tooLate.Add(1)
					continue
				}
				if e.ReceivedAt.After(newest) {
					newest = e.ReceivedAt
				}
			}
			entities.Add(1)
			events.Add(int64(len(evs)))
			if c := ppl.canonical(id, opts.Now); ppl.isGroup(c, opts.Now) {
				parts.add(c, st)
				mu.Lock()
				if newest.After(partNewest[c]) {
					partNewest[c] = newest
				}
				mu.Unlock()
				return nil
			}
			m := values(st)
			mu.Lock()
			batch = append(batch, pending{id, m, newest})
			var full []pending
			if len(batch) >= opts.BatchSize {
				full, batch = batch, make([]pending, 0, opts.BatchSize)
			}
			mu.Unlock()
			return write(full)
		})
	rep.TooLate = tooLate.Load()
	for c, newest := range partNewest {
		if err != nil {
			break
		}
		var st *aggregate.State
		if st, err = parts.merged(c); err == nil {
			batch = append(batch, pending{c, values(st), newest})
		}
	}
	if err == nil {
		err = write(batch)
	}
	p.done()
	rep.Entities, rep.Events, rep.Elapsed = entities.Load(), events.Load(), time.Since(start)
	if err != nil && errors.Is(err, context.Canceled) {
		return rep, err
	}
	return rep, err
}

// pending is one entity's values for the online store.
type pending struct {
	id       string
	values   map[string]any
	newestAt time.Time
}

// writeVectors writes batch to the store as of now, each merged into the
// stored vector: its segments and other features are kept.
func writeVectors(ctx context.Context, store featurestore.Store, entity string, now time.Time, batch []pending) error {
	if len(batch) == 0 {
		return nil
	}
	ids := make([]string, len(batch))
	for i, b := range batch {
		ids[i] = b.id
	}
	old, found, err := store.GetMany(ctx, entity, ids)
	if err != nil {
		return fmt.Errorf("cannot read online vectors: %w", err)
	}
	ups := make([]featurestore.Update, len(batch))
	for i, b := range batch {
		v := featurestore.Vector{Entity: entity, ID: b.id, Features: b.values}
		if found[i] {
			v.Segments = old[i].Segments
			merged := make(map[string]any, len(old[i].Features)+len(b.values))
			for k, x := range old[i].Features {
				merged[k] = x
			}
			for k, x := range b.values {
				merged[k] = x
			}
			v.Features = merged
		}
		v.UpdatedAt = now
		v.EventAt = b.newestAt
		ups[i] = featurestore.Update{Vector: v}
	}
	if err := store.Write(ctx, ups); err != nil {
		return fmt.Errorf("cannot write online vectors: %w", err)
	}
	return nil
}
