package backfill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// SeedsOptions select what Seeds replays.
type SeedsOptions struct {
	// Features names the features to seed; empty seeds every user feature
	// that some partition activated after its first offset (added to the
	// config while the stream ran).
	Features []string
	// Since replays only events from this time on (windows reaching back
	// before it, and lifetime features, then count only part of the
	// history). Zero replays everything.
	Since time.Time
	// Entities restricts the seeds to these ids.
	Entities []string
	// HistoryGroup is the history writer's consumer group, whose committed
	// offsets say how far ClickHouse holds the events. Default
	// kafka.HistoryGroup (pulse-history).
	HistoryGroup string
	// Progress receives progress lines (stderr in the CLI); nil is quiet.
	Progress io.Writer
}

// SeedsReport says what Seeds did.
type SeedsReport struct {
	Features []string // the features seeded
	// Cuts is each partition's activation offset the seeds were cut at,
	// by feature name (features activated at 0 need no seed and are left out).
	Cuts             map[string]map[int32]int64
	Seeds, Events    int64 // seed records produced, events replayed into them
	TooLate          int64 // events the stream's allowed lateness would also refuse
	Elapsed          time.Duration
	PartitionsSeeded int
}

// ErrNotActivated says the stream has not (yet) started counting a
// feature on some partition, so there is no cut to seed at.
var ErrNotActivated = errors.New("feature not activated by the stream")

// ErrHistoryBehind says ClickHouse does not hold every event before a cut
// yet: the history writer is behind.
var ErrHistoryBehind = errors.New("history is behind the stream")

// Seeds makes features the stream counts from some offset on (their
// activation, say after they were added to the config) hold the history
// from before: for each partition of the events topic it replays from
// ClickHouse the events read from that partition before the activation,
// aggregates them per entity with the stream's own definitions, and
// produces one seed record per entity to the seeds topic, same partition,
// for the stream task of that partition to merge once into its state.
//
// It checks first that the stream activated every selected feature on
// every partition (else ErrNotActivated) and that the history writer's
// committed offsets reach each cut (else ErrHistoryBehind): a seed missing
// events before its cut would lose them for good, the stream merges one
// seed per entity and feature.
func Seeds(ctx context.Context, cfg *config.Config, r *history.Reader, opts SeedsOptions) (SeedsReport, error) {
	rep := SeedsReport{Cuts: map[string]map[int32]int64{}}
	start := time.Now()
	if opts.HistoryGroup == "" {
		opts.HistoryGroup = kafka.HistoryGroup
	}
	set, idx, err := compile(cfg, opts.Features)
	if err != nil {
		return rep, err
	}
	cl, err := kafka.NewClient(cfg.Kafka, append(kafka.ProducerOpts(), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		return rep, err
	}
	defer cl.Close()
	tp := cfg.Kafka.Topics
	adm := kadm.NewClient(cl)
	parts, err := partitionsOf(ctx, adm, tp.Events, tp.Seeds)
	if err != nil {
		return rep, err
	}
	acts, err := readActivations(ctx, cfg.Kafka, adm, tp.Activations)
	if err != nil {
		return rep, err
	}

	// The features to seed, by fingerprint (two names may share one).
	type feat struct {
		name string
		def  config.Feature
	}
	byFP := map[uint64][]feat{}
	var fps []uint64
	for _, i := range idx {
		fp, ok := set.Fingerprint(i)
		if !ok {
			if len(opts.Features) > 0 {
				return rep, fmt.Errorf("feature %q is derived: it keeps no state; seed the features it reads", set.Names()[i])
			}
			continue
		}
		if _, dup := byFP[fp]; !dup {
			fps = append(fps, fp)
		}
		byFP[fp] = append(byFP[fp], feat{set.Names()[i], set.Feature(i)})
	}
	// Each partition's cuts: the fingerprints activated at each offset.
	type group struct {
		part int32
		cut  int64
		fps  []uint64
	}
	var groups []group
	var missing []string
	for _, fp := range fps {
		name := byFP[fp][0].name
		seeded := false
		for _, p := range parts {
			act, ok := acts[p][fp]
			if !ok {
				missing = append(missing, fmt.Sprintf("%s on partition %d", name, p))
				continue
			}
			if act == 0 {
				continue // counted from the partition's first offset
			}
			seeded = true
			for _, f := range byFP[fp] {
				if rep.Cuts[f.name] == nil {
					rep.Cuts[f.name] = map[int32]int64{}
				}
				rep.Cuts[f.name][p] = act
			}
			k := slices.IndexFunc(groups, func(g group) bool { return g.part == p && g.cut == act })
			if k < 0 {
				groups = append(groups, group{part: p, cut: act})
				k = len(groups) - 1
			}
			groups[k].fps = append(groups[k].fps, fp)
		}
		if seeded || len(opts.Features) > 0 {
			for _, f := range byFP[fp] {
				rep.Features = append(rep.Features, f.name)
			}
		}
	}
	if len(missing) > 0 {
		return rep, fmt.Errorf("%w: %s; run `pulse stream` with this config (a running one: send it SIGHUP) and try again, or use -direct when no stream runs",
			ErrNotActivated, strings.Join(missing, ", "))
	}
	if len(groups) == 0 {
		rep.Elapsed = time.Since(start)
		return rep, nil
	}
	// seen is how far ClickHouse holds each partition now: the seeds leave
	// out the events with a copy in [cut, seen), which the stream counts.
	seen, err := checkHistory(ctx, adm, opts.HistoryGroup, tp.Events, groups, func(g group) (int32, int64) { return g.part, g.cut })
	if err != nil {
		return rep, err
	}

	var seeds, events atomic.Int64
	p := newProgress(opts.Progress, "backfill seeds", func() string {
		ev := events.Load()
		return fmt.Sprintf("%d seeds, %d events, %.0f events/s", seeds.Load(), ev, float64(ev)/time.Since(start).Seconds())
	})
	var failed kafka.Failures
	done := failed.Promise
	parted := map[int32]bool{}
	defer replayGC()()
	sort.Slice(groups, func(i, j int) bool { return groups[i].part < groups[j].part })
	for _, g := range groups {
		var defs []config.Feature
		cuts := make([]aggregate.SeedCut, len(g.fps))
		for i, fp := range g.fps {
			defs = append(defs, byFP[fp][0].def)
			cuts[i] = aggregate.SeedCut{Fingerprint: fp, Cut: g.cut, Seen: seen[g.part]}
		}
		sub, err := aggregate.Compile(defs, aggregate.Options{AllowedLateness: cfg.Stream.AllowedLateness.D()})
		if err != nil {
			p.done()
			return rep, fmt.Errorf("cannot compile features: %w", err)
		}
		f := replayFilter(sub, history.EventFilter{Since: opts.Since, Entities: opts.Entities,
			Cut: &history.Cut{Partition: g.part, Before: g.cut, Seen: seen[g.part]}})
		err = r.EachEntity(ctx, f, func(id string, evs []*event.Event) error {
			st := sub.NewState()
			for _, e := range evs {
				if _, err := sub.Apply(st, e); err != nil {
					rep.TooLate++
				}
			}
			events.Add(int64(len(evs)))
			if st.Empty() {
				return nil
			}
			cl.Produce(ctx, &kgo.Record{Topic: tp.Seeds, Partition: g.part, Key: []byte(id), Value: aggregate.AppendSeed(nil, cuts, st)}, done)
			seeds.Add(1)
			return nil
		})
		if err == nil {
			// An empty seed for every entity the stream saw since the cut,
			// after the seeds with a state (same partition: in order, so
			// they come first and these are no-ops for their entities): it
			// settles the duplicates the stream holds undecided for an
			// entity with nothing else to seed.
			empty := aggregate.AppendSeed(nil, cuts, sub.NewState())
			err = r.EntitiesBetween(ctx, g.part, g.cut, seen[g.part], func(id string) error {
				if len(opts.Entities) > 0 && !slices.Contains(opts.Entities, id) {
					return nil
				}
				cl.Produce(ctx, &kgo.Record{Topic: tp.Seeds, Partition: g.part, Key: []byte(id), Value: empty}, done)
				return nil
			})
		}
		if err != nil {
			p.done()
			return rep, err
		}
		parted[g.part] = true
	}
	err = cl.Flush(ctx)
	p.done()
	if err == nil {
		err = failed.Err()
	}
	rep.Seeds, rep.Events, rep.Elapsed, rep.PartitionsSeeded = seeds.Load(), events.Load(), time.Since(start), len(parted)
	if err != nil {
		return rep, fmt.Errorf("cannot produce seeds: %w", err)
	}
	return rep, nil
}

// partitionsOf lists the events topic's partitions and checks that the
// seeds topic has the same ones.
func partitionsOf(ctx context.Context, adm *kadm.Client, events, seeds string) ([]int32, error) {
	td, err := adm.ListTopics(ctx, events, seeds)
	if err != nil {
		return nil, fmt.Errorf("cannot describe topics: %w", err)
	}
	ev, sd := td[events], td[seeds]
	if ev.Err != nil || sd.Err != nil {
		return nil, fmt.Errorf("cannot describe topics %s, %s (does the stream run? it creates them): %w", events, seeds, errors.Join(ev.Err, sd.Err))
	}
	if len(sd.Partitions) != len(ev.Partitions) {
		return nil, fmt.Errorf("seeds topic %s has %d partitions, the events topic %s %d: give them as many", seeds, len(sd.Partitions), events, len(ev.Partitions))
	}
	return ev.Partitions.Numbers(), nil
}

// readActivations reads the whole activations topic: partition ->
// fingerprint -> offset, the last record of a key winning.
//
// It reads uncommitted records too: the stream writes them in
// transactions, and an aborted one is written again, with the same
// offset, before the task processes anything. Transaction markers take
// offsets no record is read at, so a partition is known to be read when
// a record at end-2 (before the last commit marker) or end-1 came, or
// else when nothing more came for a second.
func readActivations(ctx context.Context, kc config.Kafka, adm *kadm.Client, topic string) (map[int32]map[uint64]int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("cannot list end offsets of %s: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("cannot list start offsets of %s: %w", topic, err)
	}
	from := map[int32]kgo.Offset{}
	stop := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if s, ok := starts.Lookup(topic, o.Partition); o.Err == nil && ok && s.Err == nil && s.Offset < o.Offset {
			from[o.Partition] = kgo.NewOffset().At(s.Offset)
			stop[o.Partition] = o.Offset - 2
		}
	})
	acts := map[int32]map[uint64]int64{}
	if len(from) == 0 {
		return acts, nil
	}
	cl, err := kafka.NewClient(kc, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	for len(stop) > 0 {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var errs error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				errs = errors.Join(errs, err)
			}
		})
		if errs != nil {
			return nil, fmt.Errorf("cannot read %s: %w", topic, errs)
		}
		recs := fs.Records()
		if len(recs) == 0 {
			break // idle for a second: read
		}
		for _, r := range recs {
			p, fp, off, err := kafka.ParseActivation(r.Key, r.Value)
			if err != nil {
				return nil, err
			}
			if acts[p] == nil {
				acts[p] = map[uint64]int64{}
			}
			acts[p][fp] = off
			if r.Offset >= stop[r.Partition] {
				delete(stop, r.Partition)
			}
		}
	}
	return acts, nil
}

// checkHistory makes sure the history writer committed, for every
// partition, an offset at or past the cut: ClickHouse then holds every
// event before it.
//
// It returns the committed offsets of the partitions.
func checkHistory[G any](ctx context.Context, adm *kadm.Client, group, topic string, gs []G, cut func(G) (int32, int64)) (map[int32]int64, error) {
	offs, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the offsets of the history writer's group %s: %w", group, err)
	}
	var behind []string
	seen := map[int32]int64{}
	for _, g := range gs {
		p, c := cut(g)
		o, ok := offs.Lookup(topic, p)
		if ok {
			seen[p] = o.At
		}
		if !ok || o.At < c {
			at := int64(0)
			if ok {
				at = o.At
			}
			behind = append(behind, fmt.Sprintf("partition %d at offset %d of %d", p, at, c))
		}
	}
	if len(behind) > 0 {
		return nil, fmt.Errorf("%w: the history writer (group %s) has not yet written every event before the stream's activation offsets (%s); wait until it catches up (pulse_history_lag_records) and run again",
			ErrHistoryBehind, group, strings.Join(behind, ", "))
	}
	return seen, nil
}
