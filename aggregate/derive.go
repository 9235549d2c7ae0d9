package aggregate

import "time"

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
	for i, name := range s.names {
		sc.env[name] = values[i]
	}
	sc.env["now"] = float64(now.UnixMilli())
	for _, fi := range s.derived {
		f := &s.feats[fi]
		var v any
		if f.prog != nil {
			out, err := sc.vm.Run(f.prog, sc.env)
			if err == nil {
				v = normalize(out)
			}
		}
		values[fi] = v
		sc.env[f.def.Name] = v
	}
	clear(sc.env)
	s.valuesPool.Put(sc)
}
