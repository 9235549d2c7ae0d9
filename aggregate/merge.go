package aggregate

import "slices"

// Fingerprint is the fingerprint of the i-th feature's state (see
// DecodeState): equal for two definitions whose states mean the same, be
// their names or Sets different. ok is false for derived features, which
// keep no state.
func (s *Set) Fingerprint(i int) (fp uint64, ok bool) {
	f := &s.feats[i]
	if f.prog != nil {
		return 0, false
	}
	return f.fp, true
}

// Merge folds src's partial aggregates of the features with fingerprint fp
// into dst, as if src's events had been applied to dst too: counts, sums
// and averages (sum and count) add up, min and max keep the extreme,
// first, last and last_n keep the earliest or latest by (time, messageId),
// last_by_key the latest of each key,
// distinct takes the union (exact while it fits, else the HyperLogLog
// sketch, as Apply would have). Tiles are the same for both since the
// definition is. Merging two disjoint sets of events thus gives the State
// of all of them (floating-point sums up to rounding); merging the same
// events twice counts them twice, so callers make sure it happens once.
//
// Both States must be from s. changed reports that dst changed; dst's
// newest event time becomes the later of the two.
func (s *Set) Merge(dst, src *State, fp uint64) (changed bool) {
	if dst.set != s || src.set != s {
		panic("aggregate: Merge of States from another Set")
	}
	for _, fi := range s.aggs {
		f := &s.feats[fi]
		if f.fp != fp || src.f[f.slot].empty() {
			continue
		}
		mergeSlot(f, &dst.f[f.slot], &src.f[f.slot])
		changed = true
	}
	if changed && src.seen && (!dst.seen || src.newest > dst.newest) {
		dst.newest, dst.seen = src.newest, true
	}
	return changed
}

// MergeAll merges every aggregated feature of src into dst (Merge for each
// fingerprint, once: features with one definition share a state): the
// state of a moved entity folded into its person's. changed reports that
// dst changed.
func (s *Set) MergeAll(dst, src *State) (changed bool) {
	done := make(map[uint64]bool, len(s.aggs))
	for _, fi := range s.aggs {
		fp := s.feats[fi].fp
		if done[fp] {
			continue
		}
		done[fp] = true
		if s.Merge(dst, src, fp) {
			changed = true
		}
	}
	return changed
}

func mergeSlot(f *feature, dst, src *slot) {
	switch f.agg {
	case aggCount, aggSum, aggAvg, aggMin, aggMax:
		for _, t := range src.num {
			i, found := locate(dst.num, t.idx)
			if !found {
				dst.num = slices.Insert(dst.num, i, t)
				continue
			}
			d := &dst.num[i]
			switch f.agg {
			case aggCount, aggSum:
				d.a += t.a
			case aggAvg:
				d.a += t.a
				d.b += t.b
			case aggMin:
				d.a = min(d.a, t.a)
			case aggMax:
				d.a = max(d.a, t.a)
			}
		}
	case aggFirst, aggLast:
		for _, t := range src.pt {
			i, found := locate(dst.pt, t.idx)
			if !found {
				dst.pt = slices.Insert(dst.pt, i, t)
				continue
			}
			p := &dst.pt[i].p
			if f.agg == aggFirst && p.before(t.p.ts, t.p.id) || f.agg == aggLast && p.after(t.p.ts, t.p.id) {
				*p = t.p
			}
		}
	case aggDistinct:
		for _, t := range src.set {
			i, found := locate(dst.set, t.idx)
			if !found {
				dst.set = slices.Insert(dst.set, i, setTile{idx: t.idx, d: t.d.clone()})
				continue
			}
			dst.set[i].d.merge(&t.d)
		}
	case aggLastN:
		for _, it := range src.list {
			dst.list = insertItem(dst.list, f.n, it)
		}
	case aggLastByKey:
		for _, it := range src.list {
			putKeyed(&dst.list, f.n, it)
		}
	}
}

func (d *distinct) clone() distinct {
	c := distinct{exact: slices.Clone(d.exact)}
	if d.sketch != nil {
		c.sketch = new(hll)
		*c.sketch = *d.sketch
	}
	return c
}

// merge adds o's values to d: a sketch's registers are the maxima of the
// values' ranks whatever the order they came in, so the union equals the
// distinct of all the values.
func (d *distinct) merge(o *distinct) {
	if o.sketch == nil {
		for _, h := range o.exact {
			d.add(h)
		}
		return
	}
	if d.sketch == nil {
		d.sketch = new(hll)
		for _, h := range d.exact {
			d.sketch.add(h)
		}
		d.exact = nil
	}
	d.sketch.merge(o.sketch)
}
