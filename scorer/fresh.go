package scorer

import (
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
)

// derivers recompute, at read time, the derived features that read `now`
// (e.g. days_since_last_order): a stored vector holds them as of when it
// was computed, and nothing else makes them move between events.
type derivers map[string]*aggregate.Set

// newDerivers compiles the features of every entity that has a derived
// feature reading now. A config that does not compile has been refused by
// `pulse validate` and the stream; here it just means no refresh.
func newDerivers(cfg *config.Config) derivers {
	sets, err := aggregate.CompileAll(cfg.Features, aggregate.Options{})
	if err != nil {
		return nil
	}
	d := derivers{}
	for entity, set := range sets {
		if set.UsesNow() {
			d[entity] = set
		}
	}
	return d
}

// refreshInto writes v's features into out, the derived ones as of now
// (the store's map is left alone).
func (d derivers) refreshInto(out map[string]any, entity string, v featurestore.Vector, now time.Time) {
	maps.Copy(out, v.Features)
	set := d[entity]
	if set == nil || v.Features == nil {
		return
	}
	names := set.Names()
	vals := make([]any, len(names))
	for i, n := range names {
		vals[i] = v.Features[n]
	}
	set.Derive(vals, now)
	for i, n := range names {
		if _, stored := v.Features[n]; stored || vals[i] != nil {
			out[n] = vals[i]
		}
	}
}

// freshPlan is how a model's inputs are read: the Picker that takes them
// (and the Refresher's stored inputs) out of an encoded vector, and the
// Refresher for the inputs that read now.
type freshPlan struct {
	d     *derivers
	names []string // picked: the model's inputs, then the Refresher's other inputs
	pick  *featurestore.Picker
	r     *aggregate.Refresher // nil: no input reads now
	rin   []int                // indexes into names of the Refresher's inputs
	at    []int                // per model input, its index in r.Outputs(), or -1
}

// plan returns m's freshPlan under d, building it the first time m is
// scored under this d (after a reload the next request rebuilds it).
func (m *served) plan(d *derivers) *freshPlan {
	if p := m.fresh.Load(); p != nil && p.d == d {
		return p
	}
	p := &freshPlan{d: d, names: slices.Clone(m.inputs)}
	if set := (*d)[m.entity]; set != nil {
		p.r = set.Refresher(m.inputs)
	}
	if p.r != nil {
		for _, name := range p.r.Inputs() {
			k := slices.Index(p.names, name)
			if k < 0 {
				k = len(p.names)
				p.names = append(p.names, name)
			}
			p.rin = append(p.rin, k)
		}
		p.at = make([]int, len(m.inputs))
		for j, name := range m.inputs {
			p.at[j] = slices.Index(p.r.Outputs(), name)
		}
	}
	p.pick = featurestore.NewPicker(p.names)
	m.fresh.Store(p)
	return p
}

// freshSlot is where served keeps its plan.
type freshSlot = atomic.Pointer[freshPlan]
