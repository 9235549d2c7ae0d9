package aggregate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
)

// The binary State format, version 1 (all integers varints unless said):
//
//	byte     version (1)
//	uvarint  flags (bit 0: an event has been applied)
//	varint   newest event time, epoch ms (when flag 0)
//	uvarint  number of feature records, then for each:
//	  8 bytes  the feature's fingerprint (little endian)
//	  uvarint  payload length
//	  bytes    payload, laid out by the feature's agg (see appendSlot)
//
// Features with no state are left out. DecodeState matches records to the
// Set's features by fingerprint, so a record whose definition changed or
// was removed is skipped, and a new feature starts empty.
const stateVersion = 1

var errCorrupt = errors.New("corrupt state")

// AppendBinary appends the State's binary encoding to dst.
func (st *State) AppendBinary(dst []byte) []byte {
	s := st.set
	dst = append(dst, stateVersion)
	if st.seen {
		dst = binary.AppendUvarint(dst, 1)
		dst = binary.AppendVarint(dst, st.newest)
	} else {
		dst = binary.AppendUvarint(dst, 0)
	}
	n := 0
	for i := range st.f {
		if !st.f[i].empty() {
			n++
		}
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	for _, fi := range s.aggs {
		f := &s.feats[fi]
		sl := &st.f[f.slot]
		if sl.empty() {
			continue
		}
		dst = binary.LittleEndian.AppendUint64(dst, f.fp)
		// Reserve room for the length, then put the real one in place.
		at := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		dst = appendSlot(dst, f, sl)
		size := len(dst) - at - 4
		var lb [binary.MaxVarintLen64]byte
		ln := binary.PutUvarint(lb[:], uint64(size))
		dst = slices.Replace(dst, at, at+4, lb[:ln]...)
	}
	return dst
}

// appendSlot encodes one feature's state:
//
//	count, sum, avg, min, max: uvarint tiles; per tile: varint index delta,
//	  then count: uvarint n; sum, min, max: float64; avg: float64 sum, uvarint n
//	first, last: uvarint tiles; per tile: varint index delta, item
//	distinct: uvarint tiles; per tile: varint index delta, then
//	  0, uvarint n, n × uint64 sorted hashes | 1, 4096 registers |
//	  2, uvarint n, n × (uvarint register delta, byte rank)
//	last_n: uvarint items, each an item
//
// An item is varint ts, uvarint len + messageId, and the value (omitted for
// the timestamp field).
func appendSlot(dst []byte, f *feature, sl *slot) []byte {
	prev := int64(0)
	delta := func(idx int64) {
		dst = binary.AppendVarint(dst, idx-prev)
		prev = idx
	}
	switch f.agg {
	case aggCount, aggSum, aggAvg, aggMin, aggMax:
		dst = binary.AppendUvarint(dst, uint64(len(sl.num)))
		for _, t := range sl.num {
			delta(t.idx)
			switch f.agg {
			case aggCount:
				dst = binary.AppendUvarint(dst, uint64(t.a))
			case aggAvg:
				dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(t.a))
				dst = binary.AppendUvarint(dst, uint64(t.b))
			default:
				dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(t.a))
			}
		}
	case aggFirst, aggLast:
		dst = binary.AppendUvarint(dst, uint64(len(sl.pt)))
		for _, t := range sl.pt {
			delta(t.idx)
			dst = appendItem(dst, f, &t.p)
		}
	case aggDistinct:
		dst = binary.AppendUvarint(dst, uint64(len(sl.set)))
		for _, t := range sl.set {
			delta(t.idx)
			if t.d.sketch == nil {
				dst = append(dst, 0)
				dst = binary.AppendUvarint(dst, uint64(len(t.d.exact)))
				for _, h := range t.d.exact {
					dst = binary.LittleEndian.AppendUint64(dst, h)
				}
				continue
			}
			nz := 0
			for _, r := range t.d.sketch {
				if r != 0 {
					nz++
				}
			}
			if nz*3 >= hllM {
				dst = append(dst, 1)
				dst = append(dst, t.d.sketch[:]...)
				continue
			}
			dst = append(dst, 2)
			dst = binary.AppendUvarint(dst, uint64(nz))
			last := -1
			for i, r := range t.d.sketch {
				if r != 0 {
					dst = binary.AppendUvarint(dst, uint64(i-last))
					dst = append(dst, r)
					last = i
				}
			}
		}
	case aggLastN:
		dst = binary.AppendUvarint(dst, uint64(len(sl.list)))
		for i := range sl.list {
			dst = appendItem(dst, f, &sl.list[i])
		}
	case aggLastByKey:
		// keys ascending; each: varint ts, id, key, value
		dst = binary.AppendUvarint(dst, uint64(len(sl.list)))
		for i := range sl.list {
			it := &sl.list[i]
			kv := it.v.(keyed)
			dst = binary.AppendVarint(dst, it.ts)
			dst = binary.AppendUvarint(dst, uint64(len(it.id)))
			dst = append(dst, it.id...)
			dst = binary.AppendUvarint(dst, uint64(len(kv.k)))
			dst = append(dst, kv.k...)
			dst = appendValue(dst, kv.v)
		}
	}
	return dst
}

func appendItem(dst []byte, f *feature, it *item) []byte {
	dst = binary.AppendVarint(dst, it.ts)
	dst = binary.AppendUvarint(dst, uint64(len(it.id)))
	dst = append(dst, it.id...)
	if !f.tsVal {
		dst = appendValue(dst, it.v)
	}
	return dst
}

// DecodeState reads a State written by AppendBinary, possibly under an
// older config: features whose definition (agg, event, type, where, field,
// window, n) is unchanged keep their state, whatever their name; changed
// and new features start empty; removed ones are dropped. It returns an
// error, never a wrong State, for input AppendBinary did not write.
func (s *Set) DecodeState(b []byte) (*State, error) {
	st := s.NewState()
	r := reader{b: b}
	if v := r.byte(); v != stateVersion {
		if r.err != nil {
			return nil, fmt.Errorf("cannot decode state: %w", r.err)
		}
		return nil, fmt.Errorf("cannot decode state: unknown version %d", v)
	}
	flags := r.uvarint()
	if flags&^1 != 0 {
		r.fail()
	}
	if flags&1 != 0 {
		st.newest, st.seen = r.varint(), true
	}
	n := r.uvarint()
	// The k-th record with a fingerprint goes to the k-th feature with it.
	used := map[uint64]int{}
	for i := uint64(0); i < n && r.err == nil; i++ {
		fp := r.uint64()
		size := r.uvarint()
		payload := r.bytes(size)
		if r.err != nil {
			break
		}
		f := s.byFingerprint(fp, used[fp])
		used[fp]++
		if f == nil {
			continue // the feature was removed or redefined
		}
		pr := reader{b: payload}
		sl := &st.f[f.slot]
		readSlot(&pr, f, sl)
		if pr.err == nil && len(pr.b) != 0 {
			pr.fail()
		}
		if pr.err == nil && sl.empty() {
			pr.fail() // empty features are never written
		}
		if pr.err != nil {
			return nil, fmt.Errorf("cannot decode state of feature %q: %w", f.def.Name, pr.err)
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail()
	}
	if r.err != nil {
		return nil, fmt.Errorf("cannot decode state: %w", r.err)
	}
	return st, nil
}

func (s *Set) byFingerprint(fp uint64, k int) *feature {
	for _, fi := range s.aggs {
		if s.feats[fi].fp == fp {
			if k == 0 {
				return &s.feats[fi]
			}
			k--
		}
	}
	return nil
}

func readSlot(r *reader, f *feature, sl *slot) {
	n := r.count(2)
	if f.window == 0 && n > 1 && f.agg != aggLastN && f.agg != aggLastByKey {
		r.fail()
		return
	}
	prev := int64(0)
	next := func(i int) int64 {
		d := r.varint()
		if i > 0 && d <= 0 || f.window == 0 && d != 0 {
			r.fail() // tiles are strictly ascending; lifetime has tile 0
		}
		prev += d
		return prev
	}
	switch f.agg {
	case aggCount, aggSum, aggAvg, aggMin, aggMax:
		sl.num = make([]numTile, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			t := numTile{idx: next(i)}
			switch f.agg {
			case aggCount:
				t.a = float64(r.uvarint())
				if t.a == 0 {
					r.fail()
				}
			case aggAvg:
				t.a = r.float()
				t.b = float64(r.uvarint())
				if t.b == 0 {
					r.fail()
				}
			default:
				t.a = r.float()
			}
			sl.num = append(sl.num, t)
		}
	case aggFirst, aggLast:
		sl.pt = make([]ptTile, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			t := ptTile{idx: next(i)}
			t.p = readItem(r, f)
			if r.err == nil && tileOf(t.p.ts, f.tile) != t.idx {
				r.fail()
			}
			sl.pt = append(sl.pt, t)
		}
	case aggDistinct:
		sl.set = make([]setTile, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			t := setTile{idx: next(i)}
			switch r.byte() {
			case 0:
				m := r.count(8)
				if m == 0 || m > distinctExact {
					r.fail()
					break
				}
				t.d.exact = make([]uint64, m)
				for j := range t.d.exact {
					t.d.exact[j] = r.uint64()
					if j > 0 && t.d.exact[j] <= t.d.exact[j-1] {
						r.fail()
					}
				}
			case 1:
				t.d.sketch = new(hll)
				copy(t.d.sketch[:], r.bytes(hllM))
				for _, x := range t.d.sketch {
					if x > hllMaxRank {
						r.fail()
					}
				}
			case 2:
				m := r.count(2)
				if m == 0 || m > hllM {
					r.fail()
					break
				}
				t.d.sketch = new(hll)
				at := -1
				for j := 0; j < m && r.err == nil; j++ {
					d := r.uvarint()
					x := r.byte()
					if d == 0 || d > hllM || at+int(d) >= hllM || x == 0 || x > hllMaxRank {
						r.fail()
						break
					}
					at += int(d)
					t.d.sketch[at] = x
				}
			default:
				r.fail()
			}
			sl.set = append(sl.set, t)
		}
	case aggLastN:
		if n > f.n {
			r.fail()
			return
		}
		sl.list = make([]item, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			it := readItem(r, f)
			if i > 0 && !sl.list[i-1].before(it.ts, it.id) && !(sl.list[i-1].ts == it.ts && sl.list[i-1].id == it.id) {
				r.fail() // newest first
			}
			sl.list = append(sl.list, it)
		}
	case aggLastByKey:
		if n > f.n {
			r.fail()
			return
		}
		sl.list = make([]item, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			it := item{ts: r.varint()}
			it.id = string(r.bytes(r.uvarint()))
			kv := keyed{k: string(r.bytes(r.uvarint()))}
			kv.v = r.value(0)
			if r.err == nil && (kv.v == nil || i > 0 && sl.list[i-1].v.(keyed).k >= kv.k) {
				r.fail() // no nil values; keys strictly ascending
			}
			it.v = kv
			sl.list = append(sl.list, it)
		}
	}
}

func readItem(r *reader, f *feature) item {
	it := item{ts: r.varint()}
	it.id = string(r.bytes(r.uvarint()))
	if !f.tsVal {
		it.v = r.value(0)
		if it.v == nil && r.err == nil {
			r.fail() // nil values are never stored
		}
	}
	return it
}

// Value encoding: a tag byte, then
//
//	0 null | 1 false | 2 true | 3 float64 (8 bytes LE) |
//	4 string (uvarint len, bytes) | 5 list (uvarint n, n values) |
//	6 object (uvarint n, n × (string key, value), keys ascending)
//
// Go numbers become float64; other types their fmt representation.
const (
	valNull = iota
	valFalse
	valTrue
	valNumber
	valString
	valList
	valObject
)

const maxValueDepth = 64

func appendValue(dst []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(dst, valNull)
	case bool:
		if x {
			return append(dst, valTrue)
		}
		return append(dst, valFalse)
	case string:
		dst = append(dst, valString)
		dst = binary.AppendUvarint(dst, uint64(len(x)))
		return append(dst, x...)
	case []any:
		dst = append(dst, valList)
		dst = binary.AppendUvarint(dst, uint64(len(x)))
		for _, e := range x {
			dst = appendValue(dst, e)
		}
		return dst
	case map[string]any:
		dst = append(dst, valObject)
		dst = binary.AppendUvarint(dst, uint64(len(x)))
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			dst = binary.AppendUvarint(dst, uint64(len(k)))
			dst = append(dst, k...)
			dst = appendValue(dst, x[k])
		}
		return dst
	}
	if f, ok := number(v); ok {
		dst = append(dst, valNumber)
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
	}
	return appendValue(dst, fmt.Sprint(v))
}

// reader reads the State format; after the first error every read returns
// zero values, so callers check err once.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = errCorrupt
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a length whose items take at least minSize bytes each, so a
// corrupt count cannot make us allocate more than the input justifies.
func (r *reader) count(minSize int) int {
	v := r.uvarint()
	if v > uint64(len(r.b)/minSize) {
		r.fail()
		return 0
	}
	return int(v)
}

func (r *reader) uint64() uint64 {
	if len(r.b) < 8 {
		r.fail()
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) float() float64 { return math.Float64frombits(r.uint64()) }

func (r *reader) bytes(n uint64) []byte {
	if n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) value(depth int) any {
	if depth > maxValueDepth {
		r.fail()
		return nil
	}
	switch r.byte() {
	case valNull:
		return nil
	case valFalse:
		return false
	case valTrue:
		return true
	case valNumber:
		return r.float()
	case valString:
		return string(r.bytes(r.uvarint()))
	case valList:
		n := r.count(1)
		l := make([]any, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			l = append(l, r.value(depth+1))
		}
		return l
	case valObject:
		n := r.count(2)
		m := make(map[string]any, n)
		prev := ""
		for i := 0; i < n && r.err == nil; i++ {
			k := string(r.bytes(r.uvarint()))
			if i > 0 && k <= prev {
				r.fail()
			}
			prev = k
			m[k] = r.value(depth + 1)
		}
		return m
	}
	r.fail()
	return nil
}
