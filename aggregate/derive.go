package aggregate

import (
	"time"

	"github.com/expr-lang/expr/vm"
)

// derivedStep is one derived expression in an evaluation order.
type derivedStep struct {
	name string
	prog *vm.Program // nil: the expr did not compile, the value is nil
	out  int         // index into the caller's dst; -1 for an intermediate step
}

// evalDerived is the one evaluation of derived features: Values (the
// stream, backfill and training sets), Derive and Refresher (the scorer at
// read time) all run it, which is what keeps training and serving equal.
// It runs steps in order over env, which holds their inputs by name, with
// `now` as epoch ms (float64). Each result is normalised (nil where the
// expression failed or gave no finite value), bound in env under its name
// for the steps after it, and stored in dst[out].
func evalDerived(m *vm.VM, env map[string]any, steps []derivedStep, now int64, dst []any) {
	env["now"] = float64(now)
	for _, st := range steps {
		var v any
		if st.prog != nil {
			if out, err := m.Run(st.prog, env); err == nil {
				v = normalize(out)
			}
		}
		env[st.name] = v
		if st.out >= 0 {
			dst[st.out] = v
		}
	}
}

// derive computes the derived features of values (in Names order) as of
// t, in place, from the other values.
func (s *Set) derive(sc *valuesScratch, values []any, t int64) {
	for i, name := range s.names {
		sc.env[name] = values[i]
	}
	evalDerived(&sc.vm, sc.env, s.steps, t, values)
	clear(sc.env) // do not keep values alive in the pool
}

// Derive recomputes the derived (expr) features of values as of now, in
// place, from the other values. values is in Names order, as Values fills
// it. A vector read long after it was computed is stale in exactly the
// derived features that read `now` (days since the last order, say); the
// scorer calls Derive at read time so they are as of the request.
func (s *Set) Derive(values []any, now time.Time) {
	if len(s.derived) == 0 || len(values) != len(s.names) {
		return
	}
	sc := s.valuesPool.Get().(*valuesScratch)
	s.derive(sc, values, now.UnixMilli())
	s.valuesPool.Put(sc)
}

// DeriveOne is the value of feature i as Derive would make it at now,
// without changing values: it runs only i's expr and those of the derived
// features it reads, so a caller that needs one derived feature at many
// times (the stream's search for the moment recency passes an RFM
// boundary) does not pay for the others. A feature that is not derived is
// its value in values. values is in Names order; nil when its length is
// not len(Names()).
func (s *Set) DeriveOne(i int, values []any, now time.Time) any {
	if len(values) != len(s.names) || i < 0 || i >= len(s.names) {
		return nil
	}
	f := &s.feats[i]
	if f.agg != aggDerived {
		return values[i]
	}
	sc := s.valuesPool.Get().(*valuesScratch)
	for _, j := range f.inputs {
		sc.env[s.names[j]] = values[j]
	}
	evalDerived(&sc.vm, sc.env, f.closure, now.UnixMilli(), nil)
	v := sc.env[f.def.Name]
	clear(sc.env)
	s.valuesPool.Put(sc)
	return v
}

// Inputs lists the aggregated features that feature i's value is made of
// (indexes into Names, ascending): for a derived feature those its expr
// reads, directly or through other derived features; for an aggregated
// one, i alone. With the same inputs and the same `now`, DeriveOne gives
// the same value. Do not modify it.
func (s *Set) Inputs(i int) []int {
	if i < 0 || i >= len(s.names) {
		return nil
	}
	if f := &s.feats[i]; f.agg == aggDerived {
		return f.inputs
	}
	return s.self[i : i+1]
}

// compileClosures gives each derived feature the steps DeriveOne runs (it
// and the derived features it reads, in dependency order, writing no
// output) and its aggregated inputs.
func (s *Set) compileClosures() {
	s.self = make([]int, len(s.names))
	for i := range s.self {
		s.self[i] = i
	}
	for _, i := range s.derived {
		need := map[int]bool{i: true}
		var mark func(j int)
		mark = func(j int) {
			for _, k := range s.feats[j].reads {
				if need[k] {
					continue
				}
				need[k] = true
				if s.feats[k].agg == aggDerived {
					mark(k)
				}
			}
		}
		mark(i)
		f := &s.feats[i]
		for _, st := range s.steps {
			if need[st.out] {
				f.closure = append(f.closure, derivedStep{name: st.name, prog: st.prog, out: -1})
			}
		}
		for j := range s.names {
			if need[j] && s.feats[j].agg != aggDerived {
				f.inputs = append(f.inputs, j)
			}
		}
	}
}
