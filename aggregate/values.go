package aggregate

import (
	"math"
	"time"

	"github.com/expr-lang/expr/vm"
)

type valuesScratch struct {
	ds  []*distinct
	dsc distinctScratch
	env map[string]any
	vm  vm.VM
}

// Values computes every feature of st as of now into dst, which it grows
// to len(Names()) and returns. A nil st is an entity with no events. Values are float64, string, []any (a new
// slice each call) or nil when a feature has no value (min of an empty
// window, last never set, a derived expr that failed at run time or gave
// NaN or ±Inf). first and last of the timestamp field are 0 when unset. count, sum and distinct of nothing are 0; last_n of
// nothing is an empty list. Derived features see the others by name and
// `now` as epoch ms (float64); a bool result becomes 1 or 0.
//
// Time has millisecond resolution. A windowed feature at time T covers the
// tiles that started before T and end after T - window (see docs/features.md).
func (s *Set) Values(st *State, now time.Time, dst []any) []any {
	if st == nil {
		st = s.NewState()
	} else if st.set != s {
		panic("aggregate: State used with a Set that did not make it (re-decode it after a config change)")
	}
	t := now.UnixMilli()
	if cap(dst) < len(s.names) {
		dst = make([]any, len(s.names))
	}
	dst = dst[:len(s.names)]
	sc := s.valuesPool.Get().(*valuesScratch)
	for _, fi := range s.aggs {
		f := &s.feats[fi]
		dst[fi] = f.valueAt(&st.f[f.slot], t, sc)
	}
	if len(s.derived) > 0 {
		s.derive(sc, dst, t)
	}
	clear(sc.ds)
	s.valuesPool.Put(sc)
	return dst
}

// normalize turns an expr result into a feature value.
func normalize(v any) any {
	switch x := v.(type) {
	case float64:
		if !finite(x) {
			return nil
		}
		return x
	case bool:
		if x {
			return 1.0
		}
		return 0.0
	case string, nil, []any:
		return v
	}
	if f, ok := number(v); ok {
		if !finite(f) {
			return nil
		}
		return f
	}
	switch x := v.(type) {
	case int8:
		return float64(x)
	case int16:
		return float64(x)
	case uint:
		return float64(x)
	case uint8:
		return float64(x)
	case uint16:
		return float64(x)
	}
	return v
}

func (f *feature) valueAt(sl *slot, t int64, sc *valuesScratch) any {
	switch f.agg {
	case aggCount, aggSum, aggAvg, aggMin, aggMax:
		var a, b float64
		found := false
		for i := len(sl.num) - 1; i >= 0; i-- {
			tl := &sl.num[i]
			if !counts(tl.idx, f.tile, f.window, t) {
				if f.window > 0 && (tl.idx+1)*f.tile <= t-f.window {
					break
				}
				continue
			}
			switch {
			case !found:
				a, b = tl.a, tl.b
			case f.agg == aggMin:
				a = min(a, tl.a)
			case f.agg == aggMax:
				a = max(a, tl.a)
			default:
				a += tl.a
				b += tl.b
			}
			found = true
		}
		switch f.agg {
		case aggCount, aggSum:
			return a
		case aggAvg:
			if !found {
				return nil
			}
			return a / b
		}
		if !found {
			return nil
		}
		return a
	case aggFirst, aggLast:
		var p *item
		for i := len(sl.pt) - 1; i >= 0; i-- {
			tl := &sl.pt[i]
			if !counts(tl.idx, f.tile, f.window, t) {
				if f.window > 0 && (tl.idx+1)*f.tile <= t-f.window {
					break
				}
				continue
			}
			p = &tl.p
			if f.agg == aggLast {
				break // the newest counted tile holds the last event
			}
		}
		if p == nil {
			if f.tsVal {
				return 0.0 // a time: 0 means never, and exprs can compare it
			}
			return nil
		}
		return f.itemValue(p)
	case aggDistinct:
		sc.ds = sc.ds[:0]
		for i := len(sl.set) - 1; i >= 0; i-- {
			tl := &sl.set[i]
			if !counts(tl.idx, f.tile, f.window, t) {
				if f.window > 0 && (tl.idx+1)*f.tile <= t-f.window {
					break
				}
				continue
			}
			sc.ds = append(sc.ds, &tl.d)
		}
		return union(sc.ds, &sc.dsc)
	case aggLastN:
		n := 0
		for i := range sl.list {
			if counts(tileOf(sl.list[i].ts, f.tile), f.tile, f.window, t) {
				n++
			}
		}
		out := make([]any, 0, n)
		for i := range sl.list {
			if counts(tileOf(sl.list[i].ts, f.tile), f.tile, f.window, t) {
				out = append(out, f.itemValue(&sl.list[i]))
			}
		}
		return out
	case aggLastByKey:
		out := make(map[string]any, len(sl.list))
		for i := range sl.list {
			kv := sl.list[i].v.(keyed)
			out[kv.k] = kv.v
		}
		return out
	}
	return nil
}

func (f *feature) itemValue(p *item) any {
	if f.tsVal {
		return float64(p.ts)
	}
	return p.v
}

// NextChange is the earliest time after now at which a windowed feature
// may change with no new event: a tile leaves its window, or a tile of
// events later than now enters it. ok is false when no windowed value will
// change. A derived feature reading `now` changes continuously; see
// UsesNow.
func (s *Set) NextChange(st *State, now time.Time) (t time.Time, ok bool) {
	q := now.UnixMilli()
	next := int64(math.MaxInt64)
	see := func(idx int64, f *feature) {
		start, end := idx*f.tile, (idx+1)*f.tile
		var at int64
		switch {
		case start >= q:
			at = start + 1 // enters once the query time passes its start
		case end > q-f.window:
			at = end + f.window // leaves when t - window reaches its end
		default:
			return
		}
		next = min(next, at)
	}
	for _, fi := range s.aggs {
		f := &s.feats[fi]
		if f.window == 0 {
			continue
		}
		sl := &st.f[f.slot]
		for i := range sl.num {
			see(sl.num[i].idx, f)
		}
		for i := range sl.pt {
			see(sl.pt[i].idx, f)
		}
		for i := range sl.set {
			see(sl.set[i].idx, f)
		}
		for i := range sl.list {
			see(tileOf(sl.list[i].ts, f.tile), f)
		}
	}
	if next == math.MaxInt64 {
		return time.Time{}, false
	}
	return time.UnixMilli(next).UTC(), true
}

// Expire drops the tiles that can no longer count at any time from
// now - AllowedLateness on (from now when lateness is unlimited), so
// memory stays bounded when an entity goes quiet; values at those times
// are unchanged. It reports whether st is left with no windowed data;
// st.Empty says whether anything at all is left.
func (s *Set) Expire(st *State, now time.Time) (noWindows bool) {
	horizon := now.UnixMilli() - s.opts.AllowedLateness.Milliseconds()
	noWindows = true
	for _, fi := range s.aggs {
		f := &s.feats[fi]
		if f.window == 0 {
			continue
		}
		sl := &st.f[f.slot]
		minEnd := horizon - f.window
		sl.num = dropTiles(sl.num, f.tile, minEnd)
		sl.pt = dropTiles(sl.pt, f.tile, minEnd)
		sl.set = dropTiles(sl.set, f.tile, minEnd)
		n := len(sl.list)
		for n > 0 && (tileOf(sl.list[n-1].ts, f.tile)+1)*f.tile <= minEnd {
			n--
		}
		clear(sl.list[n:])
		sl.list = sl.list[:n]
		if !sl.empty() {
			noWindows = false
		}
	}
	return noWindows
}
