package aggregate

import (
	"sync"
	"time"

	"github.com/expr-lang/expr/vm"
)

// Refresher recomputes, as of a given time, the few derived features a
// reader needs that read `now` (directly or through another derived
// feature), from a stored vector's values. It is the read-time part of
// Derive for a caller that wants some features, not all: the scorer
// answering a model whose inputs include days_since_last_order runs that
// one expression with the one stored value it reads, instead of every
// derived expression over every feature.
//
// A Refresher is safe for concurrent use.
type Refresher struct {
	outs   []string // the wanted features that read now, in the order asked
	stored []string // stored features the steps read
	steps  []derivedStep
	pool   sync.Pool // *refreshScratch
}

type refreshScratch struct {
	env map[string]any
	vm  vm.VM
}

// Refresher returns the Refresher for the wanted feature names, or nil when
// none of them depends on now (the stored values are then current). Names
// the Set does not define are ignored.
func (s *Set) Refresher(want []string) *Refresher {
	// nowDep[i]: derived feature i reads now, itself or through its inputs.
	// s.derived is in dependency order, so inputs are decided first.
	nowDep := make(map[int]bool)
	for _, i := range s.derived {
		f := &s.feats[i]
		dep := f.readsNow
		for _, j := range f.reads {
			dep = dep || nowDep[j]
		}
		if dep {
			nowDep[i] = true
		}
	}
	r := &Refresher{}
	need := map[int]int{} // derived feature -> index into outs, or -1
	var mark func(i int)
	mark = func(i int) {
		if _, ok := need[i]; ok {
			return
		}
		need[i] = -1
		for _, j := range s.feats[i].reads {
			if nowDep[j] {
				mark(j)
			}
		}
	}
	for _, name := range want {
		i, ok := s.index[name]
		if !ok || !nowDep[i] {
			continue
		}
		if o, ok := need[i]; ok && o >= 0 {
			continue // asked twice
		}
		mark(i)
		need[i] = len(r.outs)
		r.outs = append(r.outs, name)
	}
	if len(r.outs) == 0 {
		return nil
	}
	reads := map[string]bool{}
	for _, i := range s.derived {
		o, ok := need[i]
		if !ok {
			continue
		}
		f := &s.feats[i]
		r.steps = append(r.steps, derivedStep{name: f.def.Name, prog: f.prog, out: o})
		for _, j := range f.reads {
			if !nowDep[j] && !reads[s.names[j]] {
				reads[s.names[j]] = true
				r.stored = append(r.stored, s.names[j])
			}
		}
	}
	r.pool.New = func() any {
		return &refreshScratch{env: make(map[string]any, len(r.stored)+len(r.steps)+1)}
	}
	return r
}

// Outputs lists the features Refresh computes, in the order of its dst.
func (r *Refresher) Outputs() []string { return r.outs }

// Inputs lists the stored features Refresh reads.
func (r *Refresher) Inputs() []string { return r.stored }

// Refresh computes Outputs as of now into dst (len(dst) ≥ len(Outputs))
// from a stored vector's values. Values are as Derive gives them: nil
// where the expression fails or yields no finite value.
func (r *Refresher) Refresh(stored map[string]any, now time.Time, dst []any) {
	sc := r.pool.Get().(*refreshScratch)
	for _, name := range r.stored {
		if v, ok := stored[name]; ok {
			sc.env[name] = v
		}
	}
	evalDerived(&sc.vm, sc.env, r.steps, now.UnixMilli(), dst)
	clear(sc.env)
	r.pool.Put(sc)
}
