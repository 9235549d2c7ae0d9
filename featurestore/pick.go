package featurestore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unsafe"
)

// RawGetter is implemented by the stores that can hand out encoded
// vectors (Pebble and Redis), for a reader that wants a few features and
// not every vector decoded into a map.
type RawGetter interface {
	// AppendRaw appends the encoded vector of each of ids to buf, and
	// returns buf and raw, where raw[i] is ids[i]'s encoding within buf, or
	// nil when the store has no such entity. raw is reused from its
	// argument.
	AppendRaw(ctx context.Context, entity string, ids []string, buf []byte, raw [][]byte) ([]byte, [][]byte, error)
}

// Picker reads chosen features out of encoded vectors without decoding the
// others: the scorer needs a model's six inputs, not a map of thirty
// features per request. A Picker is safe for concurrent use.
type Picker struct {
	sorted []string // the names, sorted, without repeats
	slots  [][]int  // slots[k]: where sorted[k] goes in the caller's order
	n      int      // len of the caller's names
}

// NewPicker returns a Picker for names; Pick fills its dst in this order.
func NewPicker(names []string) *Picker {
	p := &Picker{n: len(names)}
	p.sorted = slices.Compact(slices.Sorted(slices.Values(names)))
	p.slots = make([][]int, len(p.sorted))
	for i, name := range names {
		k, _ := slices.BinarySearch(p.sorted, name)
		p.slots[k] = append(p.slots[k], i)
	}
	return p
}

// Kind is the type of a picked value.
type Kind uint8

// The kinds of Picked values.
const (
	KindMissing Kind = iota // the vector does not hold the feature
	KindNil                 // held, with no value yet
	KindNumber
	KindBool
	KindString
	KindOther // a list or an object
)

// Picked is one feature's value as Pick found it.
type Picked struct {
	Kind Kind
	// Num is the value as a model input: a number as it is, a boolean as 0
	// or 1, NaN for anything else (missing, nil, strings, lists).
	Num float64
	// Value holds strings, lists and objects as Decode gives them (copied
	// out of the encoding); numbers and booleans are in Num.
	Value any
}

// Any returns the value as Decode gives it: float64, bool, string,
// []any, map[string]any, or nil.
func (p Picked) Any() any {
	switch p.Kind {
	case KindNumber:
		return p.Num
	case KindBool:
		return p.Num != 0
	}
	return p.Value
}

// Pick fills dst (len(dst) ≥ the number of names) from the encoded vector
// b. It reads b up to the last wanted feature, checking what it reads; an
// error means b is not an encoded vector.
func (p *Picker) Pick(b []byte, dst []Picked) error {
	for i := range p.n {
		dst[i] = Picked{Num: math.NaN()}
	}
	if len(b) == 0 {
		return errors.New("cannot decode vector: empty value")
	}
	if b[0] != EncodingVersion {
		return fmt.Errorf("cannot decode vector: %w %d (this Pulse reads version %d)", ErrUnknownVersion, b[0], EncodingVersion)
	}
	// A view of b, not a copy: nothing read through it outlives this call
	// except what is cloned.
	d := decoder{s: unsafe.String(unsafe.SliceData(b), len(b)), i: 1}
	flags := d.byte()
	if flags&^knownFlags != 0 {
		d.fail("unknown flags %#x", flags)
	}
	if flags&flagUpdatedAt != 0 {
		d.varint()
	}
	if flags&flagEventAt != 0 {
		d.varint()
	}
	if flags&flagCanonical != 0 {
		d.string()
	}
	n := d.count()
	k := 0
	for f := 0; f < n && k < len(p.sorted) && d.err == nil; f++ {
		name := d.string()
		for k < len(p.sorted) && p.sorted[k] < name {
			k++
		}
		if k == len(p.sorted) || p.sorted[k] != name {
			d.skip(0)
			continue
		}
		v := d.pick()
		for _, i := range p.slots[k] {
			dst[i] = v
		}
		k++
	}
	return d.err
}

// pick reads one value.
func (d *decoder) pick() Picked {
	start := d.i
	switch tag := d.byte(); tag {
	case tagNil:
		return Picked{Kind: KindNil, Num: math.NaN()}
	case tagFalse:
		return Picked{Kind: KindBool}
	case tagTrue:
		return Picked{Kind: KindBool, Num: 1}
	case tagString:
		return Picked{Kind: KindString, Num: math.NaN(), Value: strings.Clone(d.string())}
	case tagFloat, tagInt:
		v, ok := d.number(tag)
		if !ok {
			return Picked{Num: math.NaN()}
		}
		return Picked{Kind: KindNumber, Num: v}
	default:
		d.i = start
		d.skip(0)
		if d.err != nil {
			return Picked{Num: math.NaN()}
		}
		// Decode a copy, so the strings in it do not point into b.
		c := decoder{s: strings.Clone(d.s[start:d.i])}
		return Picked{Kind: KindOther, Num: math.NaN(), Value: c.value(0)}
	}
}

// skip reads past one value.
func (d *decoder) skip(depth int) {
	if depth > maxDepth {
		d.fail("values nested deeper than %d", maxDepth)
		return
	}
	switch tag := d.byte(); tag {
	case tagNil, tagFalse, tagTrue:
	case tagFloat:
		if len(d.s)-d.i < 8 {
			d.fail("truncated float")
			return
		}
		d.i += 8
	case tagInt:
		d.varint()
	case tagString:
		d.string()
	case tagList:
		for range d.count() {
			d.skip(depth + 1)
		}
	case tagObject:
		for range d.count() {
			d.string()
			d.skip(depth + 1)
		}
	default:
		d.fail("unknown value tag %d", tag)
	}
}
