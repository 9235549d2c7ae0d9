package backfill

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/history"
)

// TrainingSetOptions tune TrainingSet.
type TrainingSetOptions struct {
	// Progress receives progress lines (stderr in the CLI); nil is quiet.
	Progress io.Writer
}

// Rows is a table of feature values: Rows[i] belongs to Labels[i], its
// values in the order of Features.
type Rows struct {
	Features []string
	Kinds    []string // "number", "string", "list" or "any", parallel to Features
	Labels   []Label
	Values   [][]any
}

// entityLabelsLimit bounds the entity list sent in the query text; with more
// entities the whole history is read and filtered here (ClickHouse's
// max_query_size is 256 KiB).
const entityLabelsLimit = 5000

// TrainingSet computes, for each label, the named features as of the
// label's time: only the entity's events strictly before it count. With
// identity resolution on, the entity is the person the label's id belonged
// to at that time, and its events are those of every id linked to the
// person at or before it (people).
func TrainingSet(ctx context.Context, cfg *config.Config, r *history.Reader, labels []Label, features []string, opts TrainingSetOptions) (*Rows, error) {
	if len(features) == 0 {
		return nil, fmt.Errorf("name the features to compute")
	}
	set, idx, err := compile(cfg, features)
	if err != nil {
		return nil, err
	}
	out := &Rows{Features: features, Labels: labels, Values: make([][]any, len(labels))}
	kinds := set.Kinds()
	for _, i := range idx {
		out.Kinds = append(out.Kinds, kinds[i].String())
	}
	ppl, err := loadPeople(ctx, cfg, r)
	if err != nil {
		return nil, err
	}
	byEntity, merged, until := labelsByEntity(ppl, labels)
	filter := replayFilter(set, history.EventFilter{Until: until})
	if len(byEntity) <= entityLabelsLimit {
		for id := range byEntity {
			filter.Entities = append(filter.Entities, id)
		}
	}
	var done atomic.Int64
	p := newProgress(opts.Progress, "training set", func() string {
		return fmt.Sprintf("%d/%d labels", done.Load(), len(labels))
	})
	vals := make([]any, 0, len(set.Names()))
	row := func(i int, vals []any) {
		r := make([]any, len(idx))
		for j, k := range idx {
			r[j] = vals[k]
		}
		out.Values[i] = r
		done.Add(1)
	}
	parts := newPartials[int](set)
	st := set.NewState() // one, reset for each entity: see State.Reset
	err = r.EachEntity(ctx, filter, func(id string, evs []*event.Event) error {
		list, ok := byEntity[id]
		if !ok {
			return nil
		}
		delete(byEntity, id)
		st.Reset()
		next := 0
		for _, li := range list {
			at := labels[li].At.UnixMilli()
			for next < len(evs) && evs[next].Timestamp.UnixMilli() < at {
				set.Apply(st, evs[next]) // in time order: never too late
				next++
			}
			if merged[li] {
				parts.add(li, st)
				continue
			}
			vals = set.Values(st, labels[li].At, vals)
			row(li, vals)
		}
		return nil
	})
	if err != nil {
		p.done()
		return nil, err
	}
	// Entities with no history at all: the values of an empty State.
	st.Reset()
	for _, list := range byEntity {
		for _, li := range list {
			if !merged[li] {
				vals = set.Values(st, labels[li].At, vals)
				row(li, vals)
			}
		}
	}
	for li := range merged {
		m, err := parts.merged(li)
		if err != nil {
			p.done()
			return nil, err
		}
		vals = set.Values(m, labels[li].At, vals)
		row(li, vals)
	}
	p.done()
	return out, nil
}

// labelsByEntity lists the labels by the entity ids whose events count
// for them, each id's in time order: a label's own id, or with identity
// every id of its person at its time. merged marks the labels of persons
// of several ids: each id's partial State goes to them, merged once all
// are read. until is the latest label time.
func labelsByEntity(ppl *people, labels []Label) (byEntity map[string][]int, merged map[int]bool, until time.Time) {
	byEntity, merged = map[string][]int{}, map[int]bool{}
	for i, l := range labels {
		ids := ppl.group(ppl.canonical(l.EntityID, l.At), l.At)
		if len(ids) != 1 || ids[0] != l.EntityID {
			merged[i] = true
		}
		for _, id := range ids {
			byEntity[id] = append(byEntity[id], i)
		}
		if l.At.After(until) {
			until = l.At
		}
	}
	for _, list := range byEntity {
		slices.SortStableFunc(list, func(a, b int) int { return labels[a].At.Compare(labels[b].At) })
	}
	return byEntity, merged, until
}
