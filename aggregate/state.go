package aggregate

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/pulse-rt/pulse/event"
)

const (
	// tilesPerWindow is how finely a window's trailing edge is resolved:
	// a window of W ms keeps tiles of W/60 ms (rounded down).
	tilesPerWindow = 60
	// maxLastN bounds Feature.N.
	maxLastN = 1000
)

// ErrTooLate is returned (wrapped, saying how late) by Apply for an event
// older than the newest event of the State by more than
// Options.AllowedLateness.
var ErrTooLate = errors.New("event too late")

// State is one entity's partial aggregates for one Set: tiles for windowed
// features, one accumulator for lifetime ones. Its size is bounded by the
// feature definitions, not by the event rate. A State is not safe for
// concurrent use.
type State struct {
	set    *Set
	newest int64 // epoch ms of the newest applied event; valid when seen
	seen   bool
	f      []slot // parallel to Set.aggs
}

// slot is one aggregated feature's state. Exactly one slice is used,
// chosen by the feature's agg. A lifetime feature keeps at most one tile,
// index 0.
type slot struct {
	num  []numTile // count, sum, avg, min, max
	pt   []ptTile  // first, last
	set  []setTile // distinct
	list []item    // last_n, newest first; last_by_key, by key (v is a keyed)
}

// keyed is one key's latest value in a last_by_key state.
type keyed struct {
	k string
	v any
}

// numTile is a partial numeric aggregate over the events of tile idx:
// count: a = n; sum: a = sum; avg: a = sum, b = n; min/max: a = min/max.
type numTile struct {
	idx  int64
	a, b float64
}

// ptTile is the first (or last) event of tile idx.
type ptTile struct {
	idx int64
	p   item
}

// setTile is the distinct values of tile idx.
type setTile struct {
	idx int64
	d   distinct
}

// item is one event's value, ordered by (ts, id): id is the messageId,
// which breaks ties the same way online and offline.
type item struct {
	ts int64
	id string
	v  any // nil for a timestamp field: the value is ts
}

// after reports whether (ts, id) is strictly later than it.
func (it *item) after(ts int64, id string) bool {
	return ts > it.ts || ts == it.ts && id > it.id
}

// before reports whether (ts, id) is strictly earlier than it.
func (it *item) before(ts int64, id string) bool {
	return ts < it.ts || ts == it.ts && id < it.id
}

func (t *numTile) index() int64 { return t.idx }
func (t *ptTile) index() int64  { return t.idx }
func (t *setTile) index() int64 { return t.idx }

type indexed[T any] interface {
	*T
	index() int64
}

// locate finds tile idx in tiles (ascending), searching from the newest
// end, where nearly every event lands. It returns where the tile is or
// would be inserted.
func locate[T any, P indexed[T]](tiles []T, idx int64) (int, bool) {
	i := len(tiles)
	for i > 0 {
		k := P(&tiles[i-1]).index()
		if k == idx {
			return i - 1, true
		}
		if k < idx {
			break
		}
		i--
	}
	return i, false
}

// dropTiles removes the leading tiles that end at or before minEnd.
func dropTiles[T any, P indexed[T]](tiles []T, tile, minEnd int64) []T {
	n := 0
	for n < len(tiles) && (P(&tiles[n]).index()+1)*tile <= minEnd {
		n++
	}
	if n == 0 {
		return tiles
	}
	m := copy(tiles, tiles[n:])
	clear(tiles[m:])
	return tiles[:m]
}

// NewState returns an empty State for the Set's features.
func (s *Set) NewState() *State {
	return &State{set: s, f: make([]slot, len(s.aggs))}
}

// Reset empties st for another entity of the same Set, keeping the memory
// its tiles took: a replay that aggregates entity after entity (a backfill)
// then stops growing each fresh entity's slices tile by tile, a tenth of
// its CPU. What was taken from st before (Values, AppendBinary) stays valid.
func (st *State) Reset() {
	st.newest, st.seen = 0, false
	for i := range st.f {
		sl := &st.f[i]
		// The values, ids and sets are dropped, not kept alive.
		clear(sl.pt[:cap(sl.pt)])
		clear(sl.set[:cap(sl.set)])
		clear(sl.list[:cap(sl.list)])
		sl.num, sl.pt, sl.set, sl.list = sl.num[:0], sl.pt[:0], sl.set[:0], sl.list[:0]
	}
}

// NewestMillis is the epoch-ms time of the newest event applied, or
// math.MinInt64 when none has been.
func (st *State) NewestMillis() int64 {
	if !st.seen {
		return math.MinInt64
	}
	return st.newest
}

// Empty reports whether the State holds nothing: no feature has a value.
// Such a State need not be stored.
func (st *State) Empty() bool {
	for i := range st.f {
		if !st.f[i].empty() {
			return false
		}
	}
	return true
}

func (sl *slot) empty() bool {
	return len(sl.num) == 0 && len(sl.pt) == 0 && len(sl.set) == 0 && len(sl.list) == 0
}

// floorDiv is a/b rounded toward minus infinity (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// tileOf is the index of the tile holding time ts: tile k covers the
// half-open interval (k*tile, (k+1)*tile] ms. Lifetime features have one
// tile, 0.
func tileOf(ts, tile int64) int64 {
	if tile == 0 {
		return 0
	}
	return floorDiv(ts-1, tile)
}

// counts reports whether tile idx counts at query time t (ms): it must
// have started before t and end after t - window.
func counts(idx, tile, window, t int64) bool {
	if window == 0 {
		return true
	}
	return idx*tile < t && (idx+1)*tile > t-window
}

// fieldCache memoises field lookups within one Apply; features sharing a
// field look it up once.
type fieldCache struct {
	done [16]bool
	ok   [16]bool
	v    [16]any
}

type whereScratch struct {
	env whereEnv
	vm  vm.VM
}

// Apply folds one event into st. changed is false when no feature matched
// the event (its filters or a missing field); st is then unchanged. An
// event older than st's newest by more than AllowedLateness is refused
// with an error wrapping ErrTooLate, leaving st unchanged. Apply is
// deterministic: the same events in the same order give the same State,
// and first, last and last_n do not depend on order at all.
func (s *Set) Apply(st *State, e *event.Event) (changed bool, err error) {
	if st.set != s {
		panic("aggregate: State used with a Set that did not make it (re-decode it after a config change)")
	}
	ts := e.Timestamp.UnixMilli()
	late := s.opts.AllowedLateness.Milliseconds()
	if st.seen && late > 0 && ts < st.newest-late {
		return false, fmt.Errorf("%w: %s behind the newest event, allowed lateness %s",
			ErrTooLate, time.Duration(st.newest-ts)*time.Millisecond, s.opts.AllowedLateness)
	}
	newest := ts
	if st.seen && st.newest > ts {
		newest = st.newest
	}
	// Tiles ending at or before horizon-window cannot count at any time
	// from horizon on, and no accepted event can land in them.
	horizon := int64(math.MinInt64)
	if late > 0 {
		horizon = newest - late
	}
	var cache fieldCache
	var ws *whereScratch
	for gi := range s.groups {
		g := &s.groups[gi]
		if g.event != "" && g.event != e.Event || g.typ != "" && g.typ != string(e.Type) {
			continue
		}
		if g.where != nil {
			if ws == nil {
				ws = s.wherePool.Get().(*whereScratch)
				ws.env.set(e)
			}
			out, err := ws.vm.Run(g.where, &ws.env)
			if b, _ := out.(bool); err != nil || !b {
				continue
			}
		}
		for _, fi := range g.feats {
			f := &s.feats[fi]
			if s.applyFeature(&st.f[f.slot], f, e, ts, horizon, &cache) {
				changed = true
			}
		}
	}
	if ws != nil {
		ws.env = whereEnv{} // do not keep the event's maps alive in the pool
		s.wherePool.Put(ws)
	}
	if changed {
		st.newest, st.seen = newest, true
	}
	return changed, nil
}

func (f *feature) value(e *event.Event, c *fieldCache) (any, bool) {
	if f.fieldN < 0 {
		return nil, true
	}
	if f.fieldN >= len(c.done) {
		return f.field.lookup(e)
	}
	if !c.done[f.fieldN] {
		c.v[f.fieldN], c.ok[f.fieldN] = f.field.lookup(e)
		c.done[f.fieldN] = true
	}
	return c.v[f.fieldN], c.ok[f.fieldN]
}

func (s *Set) applyFeature(sl *slot, f *feature, e *event.Event, ts, horizon int64, c *fieldCache) bool {
	// An accepted event is at or after horizon, so its tile is never one
	// the pruning below drops.
	idx := tileOf(ts, f.tile)
	var x float64
	var v any
	var ok bool
	switch f.agg {
	case aggCount:
		if f.fieldN >= 0 {
			if v, ok := f.value(e, c); !ok || v == nil {
				return false
			}
		}
	case aggSum, aggAvg, aggMin, aggMax:
		if f.tsVal {
			x = float64(ts)
		} else {
			var raw any
			if raw, ok = f.value(e, c); !ok {
				return false
			}
			if x, ok = event.Number(raw); !ok || !finite(x) {
				return false
			}
		}
	default:
		if !f.tsVal {
			if v, ok = f.value(e, c); !ok || v == nil {
				return false
			}
		}
	}
	switch f.agg {
	case aggCount, aggSum, aggAvg, aggMin, aggMax:
		i, found := locate(sl.num, idx)
		if !found {
			sl.num = slices.Insert(sl.num, i, numTile{idx: idx, a: x, b: 1})
			if f.agg == aggCount {
				sl.num[i].a = 1
			}
			if i == len(sl.num)-1 && f.window > 0 && horizon != math.MinInt64 {
				sl.num = dropTiles(sl.num, f.tile, horizon-f.window)
			}
			return true
		}
		t := &sl.num[i]
		switch f.agg {
		case aggCount:
			t.a++
		case aggSum:
			t.a += x
		case aggAvg:
			t.a += x
			t.b++
		case aggMin:
			t.a = min(t.a, x)
		case aggMax:
			t.a = max(t.a, x)
		}
	case aggFirst, aggLast:
		i, found := locate(sl.pt, idx)
		if !found {
			sl.pt = slices.Insert(sl.pt, i, ptTile{idx: idx, p: item{ts: ts, id: e.MessageID, v: v}})
			if i == len(sl.pt)-1 && f.window > 0 && horizon != math.MinInt64 {
				sl.pt = dropTiles(sl.pt, f.tile, horizon-f.window)
			}
			return true
		}
		p := &sl.pt[i].p
		if f.agg == aggFirst && p.before(ts, e.MessageID) || f.agg == aggLast && p.after(ts, e.MessageID) {
			*p = item{ts: ts, id: e.MessageID, v: v}
		}
	case aggDistinct:
		var h uint64
		if f.tsVal {
			h = hashNumber(float64(ts))
		} else if h, ok = hashValue(v); !ok {
			return false
		}
		i, found := locate(sl.set, idx)
		if !found {
			sl.set = slices.Insert(sl.set, i, setTile{idx: idx})
			sl.set[i].d.add(h)
			if i == len(sl.set)-1 && f.window > 0 && horizon != math.MinInt64 {
				sl.set = dropTiles(sl.set, f.tile, horizon-f.window)
			}
			return true
		}
		sl.set[i].d.add(h)
	case aggLastN:
		sl.list = insertItem(sl.list, f.n, item{ts: ts, id: e.MessageID, v: v})
	case aggLastByKey:
		m, isMap := v.(map[string]any)
		if !isMap {
			return false
		}
		changed := false
		for k, x := range m {
			if x == nil {
				continue // a null trait sets nothing
			}
			if putKeyed(&sl.list, f.n, item{ts: ts, id: e.MessageID, v: keyed{k: k, v: x}}) {
				changed = true
			}
		}
		return changed
	}
	return true
}

// putKeyed folds one key's value into a last_by_key list (sorted by key):
// it replaces the key's value when it is later by (ts, id), and keeps at
// most n keys, those updated last (ties, the keys of one event, broken by
// key). The result does not depend on the order values come in: each key
// ends with its latest value, and the n keys latest by (ts, id, key) stay
// (a key dropped once is older than all n kept, which only grow later, so
// a late value of it stays out too).
func putKeyed(list *[]item, n int, it item) bool {
	k := it.v.(keyed).k
	l := *list
	i, found := slices.BinarySearchFunc(l, k, func(a item, k string) int { return strings.Compare(a.v.(keyed).k, k) })
	if found {
		if !l[i].after(it.ts, it.id) {
			return false
		}
		l[i] = it
		return true
	}
	if len(l) >= n {
		old := 0
		for j := range l {
			if keyedBefore(&l[j], &l[old]) {
				old = j
			}
		}
		if !keyedBefore(&l[old], &it) {
			return false // older than every key kept
		}
		l = slices.Delete(l, old, old+1)
		if old < i {
			i--
		}
	}
	*list = slices.Insert(l, i, it)
	return true
}

// keyedBefore orders last_by_key items by (ts, id, key).
func keyedBefore(a, b *item) bool {
	if a.ts != b.ts || a.id != b.id {
		return a.after(b.ts, b.id) // (b.ts, b.id) is later
	}
	return a.v.(keyed).k < b.v.(keyed).k
}

// insertItem keeps list the n latest items, newest first. An item equal in
// (ts, id) to one already there goes after it.
func insertItem(list []item, n int, it item) []item {
	i, _ := slices.BinarySearchFunc(list, it, func(a, b item) int {
		switch {
		case a.ts != b.ts:
			if a.ts > b.ts {
				return -1
			}
			return 1
		case a.id != b.id:
			if a.id > b.id {
				return -1
			}
			return 1
		}
		return -1 // equal: keep looking right, so the new one goes after
	})
	if i >= n {
		return list
	}
	if len(list) < n {
		return slices.Insert(list, i, it)
	}
	copy(list[i+1:], list[i:len(list)-1])
	list[i] = it
	return list
}

// Prefetch reads the parts of st that Apply(st, e) reads first: the
// State, the slots of the features whose filters e passes and their
// newest tiles. It changes nothing. An entity's State is seldom in the CPU
// cache when a stream batch of many entities reaches it, and Apply then
// waits on memory read after read; a caller applying a run of events asks
// for the State of an event a few places ahead, so the reads overlap with
// the work on the events before it. The result means nothing; keep it
// somewhere so that the reads are not optimised away.
func (s *Set) Prefetch(st *State, e *event.Event) (sink int64) {
	sink = st.newest
	for gi := range s.groups {
		g := &s.groups[gi]
		if g.event != "" && g.event != e.Event || g.typ != "" && g.typ != string(e.Type) {
			continue
		}
		for _, fi := range g.feats {
			sl := &st.f[s.feats[fi].slot]
			switch {
			case len(sl.num) > 0:
				sink += sl.num[len(sl.num)-1].idx
			case len(sl.pt) > 0:
				sink += sl.pt[len(sl.pt)-1].idx
			case len(sl.set) > 0:
				sink += sl.set[len(sl.set)-1].idx
			case len(sl.list) > 0:
				sink += sl.list[0].ts
			}
		}
	}
	return sink
}
