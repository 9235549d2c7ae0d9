package backfill

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/identity"
)

// TrainingSetOptions tune TrainingSet.
type TrainingSetOptions struct {
	// Progress receives progress lines (stderr in the CLI); nil is quiet.
	Progress io.Writer
	// Links are the identity table (pulse.identity) when identity
	// resolution is on: a row for U at time T also counts the events
	// (before T) of each id linked into U at or before T
	// (identity.Timeline), as the stream merges them. Nil: each entity's
	// own events.
	Links []identity.Link
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
// label's time: only the entity's events strictly before it count.
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
	// Labels by entity, each entity's in time order.
	byEntity := map[string][]int{}
	var until time.Time
	for i, l := range labels {
		byEntity[l.EntityID] = append(byEntity[l.EntityID], i)
		if l.At.After(until) {
			until = l.At
		}
	}
	for _, list := range byEntity {
		slices.SortStableFunc(list, func(a, b int) int { return labels[a].At.Compare(labels[b].At) })
	}
	people := linkedPeople(opts.Links, byEntity, labels)
	filter := replayFilter(set, history.EventFilter{Until: until})
	if len(byEntity)+len(people.contrib) <= entityLabelsLimit {
		for id := range byEntity {
			filter.Entities = append(filter.Entities, id)
		}
		for id := range people.contrib {
			if _, ok := byEntity[id]; !ok {
				filter.Entities = append(filter.Entities, id)
			}
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
	}
	st := set.NewState() // one, reset for each entity: see State.Reset
	fold := func(st *aggregate.State, evs []*event.Event, list []int, at func(li int)) {
		foldLabels(set, st, evs, labels, list, at)
	}
	err = r.EachEntity(ctx, filter, func(id string, evs []*event.Event) error {
		if list := people.contrib[id]; len(list) > 0 {
			// Another person's id: its state at each of that person's
			// labels it was linked by, merged into the label's.
			fold(st, evs, list, func(li int) { people.merge(set, li, st) })
		}
		list, ok := byEntity[id]
		if !ok {
			return nil
		}
		delete(byEntity, id)
		fold(st, evs, list, func(li int) {
			if _, ok := people.extra[li]; ok {
				people.merge(set, li, st) // its row once every id is in
				return
			}
			vals = set.Values(st, labels[li].At, vals)
			row(li, vals)
		})
		done.Add(int64(len(list)))
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
			if _, ok := people.extra[li]; !ok {
				vals = set.Values(st, labels[li].At, vals)
				row(li, vals)
			}
		}
		done.Add(int64(len(list)))
	}
	people.rows(set, labels, row)
	p.done()
	return out, nil
}

// foldLabels applies evs in time order into st (reset) up to each of the
// labels of list (sorted by time), calling at for each: only the events
// strictly before a label count for it.
func foldLabels(set *aggregate.Set, st *aggregate.State, evs []*event.Event, labels []Label, list []int, at func(li int)) {
	st.Reset()
	next := 0
	for _, li := range list {
		t := labels[li].At.UnixMilli()
		for next < len(evs) && evs[next].Timestamp.UnixMilli() < t {
			set.Apply(st, evs[next]) // in time order: never too late
			next++
		}
		at(li)
	}
}

// linked is, for a training set with identity links, which other ids
// count for which labels: contrib[X] lists the labels (of other
// entities, in time order) X was linked into at their time; extra holds
// each such label's merged state, its row made once all ids are in.
type linked struct {
	contrib map[string][]int
	extra   map[int]*aggregate.State
}

// linkedPeople finds, for each labeled entity U and label time T, the ids
// that resolve to U at T (identity.Timeline: linked at or before T). An
// entity with labels whose own id was merged into another keeps its own
// events for its rows.
func linkedPeople(links []identity.Link, byEntity map[string][]int, labels []Label) linked {
	p := linked{contrib: map[string][]int{}, extra: map[int]*aggregate.State{}}
	if len(links) == 0 {
		return p
	}
	tl := identity.NewTimeline(links...)
	for _, x := range tl.Entities() {
		for _, u := range tl.Owners(x) {
			list := byEntity[u]
			if u == x {
				continue
			}
			for _, li := range list {
				if tl.Resolve(x, labels[li].At) == u {
					p.contrib[x] = append(p.contrib[x], li)
					p.extra[li] = nil // marked; made on the first merge
				}
			}
		}
	}
	for x, list := range p.contrib {
		slices.SortStableFunc(list, func(a, b int) int { return labels[a].At.Compare(labels[b].At) })
		p.contrib[x] = list
	}
	return p
}

// merge adds st (one id's state as of label li) into the label's state.
func (p linked) merge(set *aggregate.Set, li int, st *aggregate.State) {
	x := p.extra[li]
	if x == nil {
		x = set.NewState()
		p.extra[li] = x
	}
	for i := range set.Names() {
		if fp, ok := set.Fingerprint(i); ok {
			set.Merge(x, st, fp)
		}
	}
}

// rows makes the row of each label with linked ids: every id's state
// merged (none when no id had events before it).
func (p linked) rows(set *aggregate.Set, labels []Label, row func(int, []any)) {
	var vals []any
	for li, x := range p.extra {
		if x == nil {
			x = set.NewState()
		}
		vals = set.Values(x, labels[li].At, vals)
		row(li, vals)
	}
}
