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
