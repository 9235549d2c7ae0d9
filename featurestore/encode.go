package featurestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync/atomic"
	"time"
)

// EncodingVersion is the version byte Encode writes first. Decode reads
// only the versions it knows and fails on any other, so a store written by a
// newer Pulse is an error in an older one, never a misread.
const EncodingVersion = 1

// ErrUnknownVersion is wrapped by Decode for a value whose version byte it
// does not know.
var ErrUnknownVersion = errors.New("unknown vector encoding version")

// Version 1, all integers varints (encoding/binary):
//
//	version   byte 1
//	flags     byte: bit 0 UpdatedAt present, bit 1 EventAt present,
//	          bit 2 CanonicalID present (a Pulse before it fails on the flag)
//	updated   varint epoch ms, when flagged
//	event     varint epoch ms, when flagged
//	canonical string, when flagged
//	features  uvarint n, then n × (name string, value), names sorted
//	segments  uvarint n, then n × string, in the Vector's order
//
// A string is a uvarint length and its bytes. A value is a tag byte and:
//
//	tagNil, tagFalse, tagTrue  nothing
//	tagFloat                   8 bytes, IEEE 754 bits, little endian
//	tagInt                     varint: a float64 holding an integer below 2^53
//	                           (counts, sums of whole numbers, epoch ms), 1-3
//	                           bytes where tagFloat takes 8; decodes to float64
//	tagString                  string
//	tagList                    uvarint n, n × value
//	tagObject                  uvarint n, n × (key string, value), keys sorted
//
// Entity and ID are not encoded: the store's key carries them.
const (
	tagNil byte = iota
	tagFalse
	tagTrue
	tagFloat
	tagInt
	tagString
	tagList
	tagObject
)

const (
	flagUpdatedAt = 1 << iota
	flagEventAt
	flagCanonical
	knownFlags = flagUpdatedAt | flagEventAt | flagCanonical
)

// updatedAtMs reads an encoded vector's UpdatedAt, in epoch ms, without
// decoding the rest; ok is false when it has none (or is not version 1).
func updatedAtMs(b []byte) (ms int64, ok bool) {
	if len(b) < 3 || b[0] != 1 || b[1]&flagUpdatedAt == 0 {
		return 0, false
	}
	ms, n := binary.Varint(b[2:])
	return ms, n > 0
}

// maxDepth bounds the nesting of lists and objects Decode accepts, so a
// corrupt value cannot exhaust the stack.
const maxDepth = 32

// maxExactInt is 2^53: every integer of smaller magnitude is exact in a
// float64, so tagInt round-trips.
const maxExactInt = 1 << 53

// Encode appends v's encoding to dst and returns it.
//
// Feature values are float64, string, []any and nil, as aggregate produces;
// bool, map[string]any (a JSON object from first/last of a property),
// []string and Go's other number types are kept too (numbers decode as
// float64). A value of any other type is stored as nil (no value), as
// aggregate does for a derived expression that fails.
//
// The encoding of a vector is deterministic (features and object keys are
// sorted), so equal vectors encode to equal bytes.
func Encode(v Vector, dst []byte) []byte {
	dst = append(dst, EncodingVersion)
	var flags byte
	if !v.UpdatedAt.IsZero() {
		flags |= flagUpdatedAt
	}
	if !v.EventAt.IsZero() {
		flags |= flagEventAt
	}
	if v.CanonicalID != "" {
		flags |= flagCanonical
	}
	dst = append(dst, flags)
	if flags&flagUpdatedAt != 0 {
		dst = binary.AppendVarint(dst, v.UpdatedAt.UnixMilli())
	}
	if flags&flagEventAt != 0 {
		dst = binary.AppendVarint(dst, v.EventAt.UnixMilli())
	}
	if flags&flagCanonical != 0 {
		dst = binary.AppendUvarint(dst, uint64(len(v.CanonicalID)))
		dst = append(dst, v.CanonicalID...)
	}

	dst = binary.AppendUvarint(dst, uint64(len(v.Features)))
	dst = appendFeatures(dst, v.Features)

	dst = binary.AppendUvarint(dst, uint64(len(v.Segments)))
	for _, s := range v.Segments {
		dst = appendString(dst, s)
	}
	return dst
}

// lastNames is the sorted feature names of a recent vector (immutable
// once stored): the vectors of one config have the same names, so Encode
// walks them in that order and sorts only when a vector's names differ.
var lastNames atomic.Pointer[[]string]

// appendFeatures appends the features, names sorted.
func appendFeatures(dst []byte, features map[string]any) []byte {
	if last := lastNames.Load(); last != nil && len(*last) == len(features) {
		if out, ok := appendInOrder(dst, features, *last); ok {
			return out
		}
	}
	var stack [64]string // names of a typical vector sort without allocating
	names := stack[:0]
	for name := range features {
		names = append(names, name)
	}
	slices.Sort(names)
	dst, _ = appendInOrder(dst, features, names)
	if len(names) > 0 {
		keep := slices.Clone(names)
		lastNames.Store(&keep)
	}
	return dst
}

// appendInOrder appends features in the order of names, which are
// distinct and as many as features: false when one is not in features,
// which then holds other names.
func appendInOrder(dst []byte, features map[string]any, names []string) ([]byte, bool) {
	for _, name := range names {
		v, ok := features[name]
		if !ok {
			return dst, false
		}
		dst = appendString(dst, name)
		dst = appendValue(dst, v)
	}
	return dst, true
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendValue(dst []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(dst, tagNil)
	case float64:
		return appendFloat(dst, x)
	case string:
		return appendString(append(dst, tagString), x)
	case []any:
		dst = binary.AppendUvarint(append(dst, tagList), uint64(len(x)))
		for _, e := range x {
			dst = appendValue(dst, e)
		}
		return dst
	case bool:
		if x {
			return append(dst, tagTrue)
		}
		return append(dst, tagFalse)
	case []string:
		dst = binary.AppendUvarint(append(dst, tagList), uint64(len(x)))
		for _, e := range x {
			dst = appendString(append(dst, tagString), e)
		}
		return dst
	case map[string]any:
		dst = binary.AppendUvarint(append(dst, tagObject), uint64(len(x)))
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			dst = appendString(dst, k)
			dst = appendValue(dst, x[k])
		}
		return dst
	case float32:
		return appendFloat(dst, float64(x))
	case int:
		return appendFloat(dst, float64(x))
	case int8:
		return appendFloat(dst, float64(x))
	case int16:
		return appendFloat(dst, float64(x))
	case int32:
		return appendFloat(dst, float64(x))
	case int64:
		return appendFloat(dst, float64(x))
	case uint:
		return appendFloat(dst, float64(x))
	case uint8:
		return appendFloat(dst, float64(x))
	case uint16:
		return appendFloat(dst, float64(x))
	case uint32:
		return appendFloat(dst, float64(x))
	case uint64:
		return appendFloat(dst, float64(x))
	}
	return append(dst, tagNil)
}

func appendFloat(dst []byte, f float64) []byte {
	if i := int64(f); float64(i) == f && i > -maxExactInt && i < maxExactInt && !(i == 0 && math.Signbit(f)) {
		return binary.AppendVarint(append(dst, tagInt), i)
	}
	return binary.LittleEndian.AppendUint64(append(dst, tagFloat), math.Float64bits(f))
}

// Decode reads a vector Encode wrote. Entity and ID are left empty (the
// store fills them from the key); times are UTC. It fails on an unknown
// version, truncated or trailing bytes, unknown tags or flags, duplicate
// names and nesting deeper than 32; whatever b holds, it allocates at most
// a small multiple of len(b) (a count never exceeds the bytes left).
func Decode(b []byte) (Vector, error) {
	// One string holds every name and string value of the vector: one
	// allocation instead of one per string.
	return decode(string(b))
}

// decode reads from a string, which Redis replies already are.
func decode(s string) (Vector, error) {
	var v Vector
	if len(s) == 0 {
		return v, errors.New("cannot decode vector: empty value")
	}
	if s[0] != EncodingVersion {
		return v, fmt.Errorf("cannot decode vector: %w %d (this Pulse reads version %d)", ErrUnknownVersion, s[0], EncodingVersion)
	}
	d := decoder{s: s, i: 1}
	flags := d.byte()
	if flags&^knownFlags != 0 {
		d.fail("unknown flags %#x", flags)
	}
	if flags&flagUpdatedAt != 0 {
		v.UpdatedAt = time.UnixMilli(d.varint()).UTC()
	}
	if flags&flagEventAt != 0 {
		v.EventAt = time.UnixMilli(d.varint()).UTC()
	}
	if flags&flagCanonical != 0 {
		v.CanonicalID = d.string()
	}
	if n := d.count(); n > 0 {
		v.Features = make(map[string]any, n)
		for range n {
			name := d.string()
			v.Features[name] = d.value(0)
		}
		if d.err == nil && len(v.Features) != n {
			d.fail("duplicate feature names")
		}
	}
	if n := d.count(); n > 0 {
		v.Segments = make([]string, n)
		for i := range v.Segments {
			v.Segments[i] = d.string()
		}
	}
	if d.err == nil && d.i != len(d.s) {
		d.fail("%d trailing bytes", len(d.s)-d.i)
	}
	if d.err != nil {
		return Vector{}, d.err
	}
	return v, nil
}

// decoder reads s from i. After the first error every read returns a zero
// value and err keeps that first error, so callers check once at the end.
type decoder struct {
	s   string
	i   int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("cannot decode vector at byte %d: %s", d.i, fmt.Sprintf(format, args...))
	}
	d.i = len(d.s)
}

func (d *decoder) byte() byte {
	if d.i >= len(d.s) {
		d.fail("truncated")
		return 0
	}
	c := d.s[d.i]
	d.i++
	return c
}

func (d *decoder) uvarint() uint64 {
	var x uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if d.i >= len(d.s) {
			d.fail("truncated varint")
			return 0
		}
		c := d.s[d.i]
		d.i++
		if c < 0x80 {
			if shift == 63 && c > 1 {
				break
			}
			return x | uint64(c)<<shift
		}
		x |= uint64(c&0x7f) << shift
	}
	d.fail("varint overflows 64 bits")
	return 0
}

func (d *decoder) varint() int64 {
	u := d.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

// count reads a length of things that take at least a byte each, so a
// corrupt count cannot make Decode allocate more than the input's size.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.s)-d.i) {
		d.fail("count %d exceeds the %d bytes left", n, len(d.s)-d.i)
		return 0
	}
	return int(n)
}

func (d *decoder) string() string {
	n := d.count()
	s := d.s[d.i : d.i+n]
	d.i += n
	return s
}

func (d *decoder) value(depth int) any {
	if depth > maxDepth {
		d.fail("values nested deeper than %d", maxDepth)
		return nil
	}
	switch tag := d.byte(); tag {
	case tagNil:
		return nil
	case tagFalse:
		return false
	case tagTrue:
		return true
	case tagFloat, tagInt:
		f, ok := d.number(tag)
		if !ok {
			return nil
		}
		return f
	case tagString:
		return d.string()
	case tagList:
		n := d.count()
		list := make([]any, n)
		for k := range list {
			list[k] = d.value(depth + 1)
		}
		return list
	case tagObject:
		n := d.count()
		obj := make(map[string]any, n)
		for range n {
			k := d.string()
			obj[k] = d.value(depth + 1)
		}
		if d.err == nil && len(obj) != n {
			d.fail("duplicate object keys")
		}
		return obj
	default:
		d.fail("unknown value tag %d", tag)
		return nil
	}
}

// number reads the rest of a tagFloat or tagInt value.
func (d *decoder) number(tag byte) (float64, bool) {
	if tag == tagInt {
		i := d.varint()
		if i <= -maxExactInt || i >= maxExactInt {
			d.fail("integer %d is not exact as a float64", i)
			return 0, false
		}
		return float64(i), d.err == nil
	}
	if len(d.s)-d.i < 8 {
		d.fail("truncated float")
		return 0, false
	}
	var bits uint64
	for k := 7; k >= 0; k-- {
		bits = bits<<8 | uint64(d.s[d.i+k])
	}
	d.i += 8
	return math.Float64frombits(bits), true
}

// CanonicalOf reads an encoded vector's CanonicalID without decoding the
// rest: "" for a vector of an entity not merged into another (or not a
// version 1 vector).
func CanonicalOf(b []byte) string {
	if len(b) < 2 || b[0] != EncodingVersion || b[1]&flagCanonical == 0 {
		return ""
	}
	d := decoder{s: string(b), i: 2}
	if b[1]&flagUpdatedAt != 0 {
		d.varint()
	}
	if b[1]&flagEventAt != 0 {
		d.varint()
	}
	c := d.string()
	if d.err != nil {
		return ""
	}
	return c
}
