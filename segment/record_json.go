package segment

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/internal/jsonstr"
)

// The stream writes a record per segment change with every feature of the
// entity: with RFM groups, several per order. appendRecord writes the
// bytes json.Marshal writes (encoding/json's: fields in order, map keys
// sorted, HTML-safe strings, its float format) without reflection; a
// value it does not know is appended as json.Marshal makes it.
// TestRecordEncodeMatchesMarshal holds it to the same bytes.

// recordScratch is appendRecord's reusable state.
type recordScratch struct {
	buf  []byte
	keys [][]string // per nesting depth
}

var recordPool = sync.Pool{New: func() any { return new(recordScratch) }}

// appendRecord appends r as JSON. ok false: a value json.Marshal would
// refuse (NaN, a time outside years 0-9999) or fail on, or a time not in
// UTC; the caller then marshals r, for the bytes or the error.
func appendRecord(sc *recordScratch, b []byte, r *Record) (_ []byte, ok bool) {
	if b, ok = appendRecordHead(b, r); !ok {
		return b, false
	}
	if len(r.Features) > 0 {
		b = append(b, `,"features":`...)
		if b, ok = sc.appendMap(b, r.Features, 0); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

// appendRecordHead appends r up to its features, without the closing
// brace.
func appendRecordHead(b []byte, r *Record) (_ []byte, ok bool) {
	if _, off := r.At.Zone(); off != 0 {
		return b, false // json.Marshal's checks of an offset: not ours to copy
	}
	if y := r.At.Year(); y < 0 || y > 9999 {
		return b, false
	}
	b = append(b, `{"change_id":`...)
	b = jsonstr.AppendMarshal(b, r.ID)
	b = append(b, `,"segment":`...)
	b = jsonstr.AppendMarshal(b, r.Segment)
	b = append(b, `,"entity":`...)
	b = jsonstr.AppendMarshal(b, r.Entity)
	b = append(b, `,"id":`...)
	b = jsonstr.AppendMarshal(b, r.EntityID)
	b = append(b, `,"change":`...)
	b = jsonstr.AppendMarshal(b, r.Change)
	b = append(b, `,"at":"`...)
	b = r.At.AppendFormat(b, "2006-01-02T15:04:05.999999999Z07:00")
	b = append(b, '"')
	if r.Reason != "" {
		b = append(b, `,"reason":`...)
		b = jsonstr.AppendMarshal(b, r.Reason)
	}
	return b, true
}

// Features encodes the features of records from values in the order of
// names, as Encode writes a Features map of those names: the stream
// encodes an entity's features once for all of its changes, without the
// map. Safe for concurrent use.
type Features struct {
	order []int    // indexes into names, sorted by name
	keys  [][]byte // "name": of each, in that order
}

// NewFeatures is the encoder of values in the order of names. A name
// given twice is written once, with its last value, as a map filled in
// that order holds it.
func NewFeatures(names []string) *Features {
	f := &Features{}
	for i := range names {
		f.order = append(f.order, i)
	}
	slices.SortStableFunc(f.order, func(a, b int) int { return strings.Compare(names[a], names[b]) })
	keep := f.order[:0]
	for k, i := range f.order {
		if k+1 < len(f.order) && names[f.order[k+1]] == names[i] {
			continue // the next is the same name, later
		}
		keep = append(keep, i)
	}
	f.order = keep
	for _, i := range f.order {
		f.keys = append(f.keys, append(jsonstr.AppendMarshal(nil, names[i]), ':'))
	}
	return f
}

// Append appends the JSON object of vals (parallel to the names) as
// Encode writes it in a record; nothing when there are no names. ok
// false: a value json.Marshal refuses (NaN).
func (f *Features) Append(b []byte, vals []any) (_ []byte, ok bool) {
	if len(f.order) == 0 {
		return b, true
	}
	sc := recordPool.Get().(*recordScratch)
	defer recordPool.Put(sc)
	for k, i := range f.order {
		if k == 0 {
			b = append(b, '{')
		} else {
			b = append(b, ',')
		}
		b = append(b, f.keys[k]...)
		if b, ok = sc.appendValue(b, vals[i], 0); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

// EncodeWith is Encode of r with its features given as Features.Append
// wrote them (r.Features is not read): the records of one entity's
// changes share one encoding of its features.
func (r *Record) EncodeWith(features []byte) ([]byte, error) {
	b, ok := appendRecordHead(make([]byte, 0, 200+len(features)), r)
	if !ok {
		h := *r
		h.Features = nil
		var v any = &h
		if len(features) > 0 {
			v = wireRecord{Record: h, Features: features}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("cannot encode segment record: %w", err)
		}
		return b, nil
	}
	if len(features) > 0 {
		b = append(b, `,"features":`...)
		b = append(b, features...)
	}
	return append(b, '}'), nil
}

func (sc *recordScratch) appendValue(b []byte, v any, depth int) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), true
	case float64:
		return appendJSONFloat(b, x)
	case string:
		return jsonstr.AppendMarshal(b, x), true
	case bool:
		return strconv.AppendBool(b, x), true
	case map[string]any:
		if x == nil {
			return append(b, "null"...), true
		}
		return sc.appendMap(b, x, depth+1)
	case []any:
		if x == nil {
			return append(b, "null"...), true
		}
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var ok bool
			if b, ok = sc.appendValue(b, e, depth+1); !ok {
				return b, false
			}
		}
		return append(b, ']'), true
	case []string:
		if x == nil {
			return append(b, "null"...), true
		}
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonstr.AppendMarshal(b, e)
		}
		return append(b, ']'), true
	}
	j, err := json.Marshal(v)
	if err != nil {
		return b, false
	}
	return append(b, j...), true
}

// appendMap appends m with its keys sorted, as json.Marshal does.
func (sc *recordScratch) appendMap(b []byte, m map[string]any, depth int) ([]byte, bool) {
	for len(sc.keys) <= depth {
		sc.keys = append(sc.keys, nil)
	}
	keys := sc.keys[depth][:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	sc.keys[depth] = keys
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonstr.AppendMarshal(b, k)
		b = append(b, ':')
		var ok bool
		if b, ok = sc.appendValue(b, m[k], depth); !ok {
			clear(keys)
			return b, false
		}
	}
	clear(keys) // do not keep the keys alive in the pool
	return append(b, '}'), true
}

// appendJSONFloat is encoding/json's float64: the shortest form, in
// exponent notation below 1e-6 and from 1e21, with a one-digit negative
// exponent written as such (1e-7, not 1e-07).
func appendJSONFloat(b []byte, f float64) ([]byte, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, false
	}
	if f == math.Trunc(f) && f != 0 && f > -1e15 && f < 1e15 {
		return strconv.AppendInt(b, int64(f), 10), true // what 'f' writes, faster
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, true
}
