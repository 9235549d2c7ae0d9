package history

import (
	"fmt"
	"hash/maphash"
	"math/bits"
	"strconv"
	"strings"

	json "github.com/goccy/go-json"
)

// A replay's cost is mostly reading and decoding columns nobody looks at:
// 20 features typically read the event name, the time and a property or
// two of the ~600 bytes of an event. A projection reads only the columns
// the wanted fields come from and, of the maps, only the keys named.

// The events columns a replay can read, in row order.
const (
	colType = iota
	colEvent
	colName
	colUserID
	colAnonymousID
	colPreviousID
	colGroupID
	colSentAt
	colOriginal
	colFeatureSet
	colProperties
	colTraits
	colContext
	colIntegrations
	nCols
)

var colNames = [nCols]string{"type", "event", "name", "user_id", "anonymous_id", "previous_id", "group_id",
	"sent_at_ms", "original_timestamp_ms", "feature_set", "properties", "traits", "context", "integrations"}

// topColumns maps an event's top-level field names (event.Lookup's) to
// their columns.
var topColumns = map[string]int{"type": colType, "event": colEvent, "name": colName, "userId": colUserID,
	"anonymousId": colAnonymousID, "previousId": colPreviousID, "groupId": colGroupID, "sentAt": colSentAt,
	"originalTimestamp": colOriginal, "featureSet": colFeatureSet,
	"properties": colProperties, "traits": colTraits, "context": colContext, "integrations": colIntegrations}

// projection is what EachEntity reads of each event beyond the entity,
// message id, timestamp and receive time that ordering needs.
type projection struct {
	cols []int // the columns read, in SELECT order
	// keys are, per map (properties, traits, context, integrations), the
	// top-level keys to decode; nil with the map's column read decodes
	// all of it.
	keys [4][]string
	more bool // a column of rowMore is read
	// mapEvents, when not nil, are the only events whose maps are read.
	mapEvents []string
}

// project plans the read of f: f.Fields when set, else every top-level
// field and the maps f.Maps names.
func project(f EventFilter) projection {
	var p projection
	if f.Fields == nil {
		for c := range colProperties {
			p.cols = append(p.cols, c)
		}
		for i, want := range []bool{f.Maps.Properties, f.Maps.Traits, f.Maps.Context, f.Maps.Integrations} {
			if want {
				p.cols = append(p.cols, colProperties+i)
			}
		}
		p.setMore()
		return p
	}
	var read [nCols]bool
	whole := [4]bool{}
	p.mapEvents = f.MapEvents
	for _, path := range f.Fields {
		head, rest, _ := strings.Cut(path, ".")
		c, ok := topColumns[head]
		if !ok {
			continue // messageId, timestamp, receivedAt: always read
		}
		read[c] = true
		if c < colProperties {
			continue
		}
		m := c - colProperties
		key, _, _ := strings.Cut(rest, ".")
		if key == "" {
			whole[m] = true
		} else if !contains(p.keys[m], key) {
			p.keys[m] = append(p.keys[m], key)
		}
	}
	for m := range whole {
		if whole[m] {
			p.keys[m] = nil
		}
	}
	for c := range nCols {
		if read[c] {
			p.cols = append(p.cols, c)
		}
	}
	p.setMore()
	return p
}

func (p *projection) setMore() {
	for _, c := range p.cols {
		p.more = p.more || c >= colName && c <= colFeatureSet
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// A row comes as one string, packed by the server: clickhouse-go scans a
// row column by column, each column a call and each string column a new
// allocation. Packing costs the server about 0.6 CPU-s per 10M rows and
// saved the Go side more (docs/BENCHMARKS.md, "History and backfill"). The
// packed row is its fixed-width numbers (little-endian, as
// reinterpretAsString writes them), the byte lengths of its strings but
// the last (UInt32), then the strings: entity id, message id, and the
// projection's string columns in order.

// Where the fixed-width head of a packed row puts its numbers.
const (
	packHash = 0 // cityHash64(message_id), hashed by the server (vectorised) for the dedupe
	packTS   = 8
	packRecv = 16
	packInts = 24 // then sent_at_ms and original_timestamp_ms, when read
)

// strCols are the projection's string columns after entity_id and
// message_id; intCols its Int64 ones.
func (p *projection) strCols() (strs, ints []int) {
	for _, c := range p.cols {
		if c == colSentAt || c == colOriginal {
			ints = append(ints, c)
		} else {
			strs = append(strs, c)
		}
	}
	return strs, ints
}

// selectList is the projection's SELECT list: one packed row.
func (p *projection) selectList() string {
	strs, ints := p.strCols()
	fixed := func(expr string, n int) string {
		return fmt.Sprintf("toFixedString(reinterpretAsString(%s), %d)", expr, n)
	}
	parts := []string{fixed("cityHash64(message_id)", 8), fixed("timestamp_ms", 8), fixed("received_at_ms", 8)}
	for _, c := range ints {
		parts = append(parts, fixed(colNames[c], 8))
	}
	names := []string{"entity_id", "message_id"}
	for _, c := range strs {
		n := colNames[c]
		switch {
		case c < colProperties || p.mapEvents == nil:
		case len(p.mapEvents) == 0:
			n = "''"
		default:
			// The other events' maps stay on the server.
			n = fmt.Sprintf("if(event IN (%s), %s, '')", stringList(p.mapEvents), n)
		}
		names = append(names, n)
	}
	for _, n := range names[:len(names)-1] {
		parts = append(parts, fixed("toUInt32(length("+n+"))", 4))
	}
	return "concat(" + strings.Join(append(parts, names...), ", ") + ")"
}

// unpacker reads packed rows of one projection.
type unpacker struct {
	strs, ints []int
	lens       int // where the strings' lengths start
	head       int // bytes before the strings
	more       bool
}

func (p *projection) unpacker() unpacker {
	u := unpacker{more: p.more}
	u.strs, u.ints = p.strCols()
	u.lens = packInts + 8*len(u.ints)
	u.head = u.lens + 4*(len(u.strs)+1)
	return u
}

// valid says whether s is a packed row of this projection: the readers
// below trust one that is.
func (u *unpacker) valid(s string) bool {
	if len(s) < u.head {
		return false
	}
	n := u.head
	for k := range len(u.strs) + 1 {
		n += int(le32(s, u.lens+4*k))
	}
	return n <= len(s)
}

func (u *unpacker) key(s string, row int32) sortKey {
	return sortKey{ts: int64(le64(s, packTS)), recv: int64(le64(s, packRecv)), hash: le64(s, packHash), row: row}
}

func (u *unpacker) entity(s string) string {
	return s[u.head : u.head+int(le32(s, u.lens))]
}

func (u *unpacker) messageID(s string) string {
	at := u.head + int(le32(s, u.lens))
	return s[at : at+int(le32(s, u.lens+4))]
}

// split sets x's fields from the valid packed row s (x's strings share
// s's bytes).
func (u *unpacker) split(s string, x *row) {
	x.ts, x.recv = int64(le64(s, packTS)), int64(le64(s, packRecv))
	at := u.head
	next := func(k int) string {
		if k == len(u.strs)+1 {
			return s[at:]
		}
		n := int(le32(s, u.lens+4*k))
		v := s[at : at+n]
		at += n
		return v
	}
	x.entity, x.messageID = next(0), next(1)
	if u.more {
		x.more = &rowMore{}
	}
	for k, c := range u.strs {
		v := next(k + 2)
		switch c {
		case colType:
			x.typ = v
		case colEvent:
			x.evt = v
		case colName:
			x.more.name = v
		case colUserID:
			x.more.userID = v
		case colAnonymousID:
			x.more.anonymousID = v
		case colPreviousID:
			x.more.previousID = v
		case colGroupID:
			x.more.groupID = v
		case colFeatureSet:
			x.more.featureSet = v
		case colProperties, colTraits, colContext, colIntegrations:
			x.maps[c-colProperties] = v
		}
	}
	for k, c := range u.ints {
		v := int64(le64(s, packInts+8*k))
		if c == colSentAt {
			x.more.sent = v
		} else {
			x.more.orig = v
		}
	}
}

// le64 and le32 read little-endian numbers at s[i:].
func le64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

func le32(s string, i int) uint32 {
	s = s[i : i+4]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

// keyDecoder decodes the named top-level keys of stored JSON objects,
// remembering recent short scalar values: the same product ids and amounts
// come again and again, and decoding one (a float parse, an allocation to
// box it) cost more than finding it. The raw text is kept in the slot, not
// as a string into an old row: reading that cost a cache miss. Values are
// immutable, so events share them. A keyDecoder is not safe for
// concurrent use.
type keyDecoder struct {
	seed   maphash.Seed
	recent [4096]recentValue
}

type recentValue struct {
	n   uint8 // len(raw); 0: empty slot
	raw [23]byte
	v   any
}

func newKeyDecoder() *keyDecoder { return &keyDecoder{seed: maphash.MakeSeed()} }

// scalar is scalar(raw), remembered.
func (d *keyDecoder) scalar(raw string) (any, bool) {
	if len(raw) == 0 || len(raw) > len(recentValue{}.raw) {
		return scalar(raw)
	}
	slot := &d.recent[maphash.String(d.seed, raw)%uint64(len(d.recent))]
	if int(slot.n) == len(raw) && string(slot.raw[:slot.n]) == raw {
		return slot.v, true
	}
	v, ok := scalar(raw)
	if ok {
		if str, isStr := v.(string); isStr {
			v = strings.Clone(str) // not a piece of the row, kept alive and far away
		}
		slot.n = uint8(copy(slot.raw[:], raw))
		slot.v = v
	}
	return v, ok
}

// decode decodes the named top-level keys of the stored JSON object s into
// m, as decodeMap would decode them, and returns m, or nil when none is
// there. m holds no keys but keys (it is only ever filled here, for the
// same keys): those s lacks are deleted. Keys with escapes, or anything
// odd, take the full decoder.
func (d *keyDecoder) decode(s string, keys []string, m map[string]any) map[string]any {
	if len(s) <= 2 {
		return nil
	}
	if len(keys) > 64 {
		clear(m) // more keys than found has bits
	}
	found, ok := d.scanKeys(s, keys, m)
	switch {
	case !ok:
		full := decodeMap(s)
		clear(m)
		for _, k := range keys {
			if v, ok := full[k]; ok {
				m[k] = v
			}
		}
	case len(keys) <= 64 && len(m) > bits.OnesCount64(found):
		for i, k := range keys {
			if found&(1<<i) == 0 {
				delete(m, k)
			}
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// scanKeys walks the object s, decoding the values of keys into m and
// skipping the others; found has bit i set when keys[i] was (for the
// first 64 keys). !ok: not the simple case, decode it all.
func (d *keyDecoder) scanKeys(s string, keys []string, m map[string]any) (found uint64, ok bool) {
	i := skipSpace(s, 0)
	if i >= len(s) || s[i] != '{' {
		return 0, false
	}
	i = skipSpace(s, i+1)
	if i < len(s) && s[i] == '}' {
		return 0, skipSpace(s, i+1) == len(s)
	}
	for {
		key, j, ok := flatString(s, i)
		if !ok {
			return 0, false
		}
		i = skipSpace(s, j)
		if i >= len(s) || s[i] != ':' {
			return 0, false
		}
		i = skipSpace(s, i+1)
		end, ok := skipValue(s, i)
		if !ok {
			return 0, false
		}
		for ki, k := range keys {
			if k != key {
				continue
			}
			v, ok := d.scalar(s[i:end])
			if !ok {
				var x any // apart from v, which would escape on every call
				if json.Unmarshal([]byte(s[i:end]), &x) != nil {
					return 0, false
				}
				v = x
			}
			m[key] = v
			found |= 1 << (ki & 63)
			break
		}
		i = skipSpace(s, end)
		if i >= len(s) {
			return 0, false
		}
		switch s[i] {
		case ',':
			i = skipSpace(s, i+1)
		case '}':
			return found, skipSpace(s, i+1) == len(s)
		default:
			return 0, false
		}
	}
}

// scalar decodes a string without escapes, a number, true, false or null
// as decodeFlat does.
func scalar(v string) (any, bool) {
	switch c := v[0]; {
	case c == '"':
		s, j, ok := flatString(v, 0)
		return s, ok && j == len(v)
	case c == '-' || c >= '0' && c <= '9':
		if f, ok := shortDecimal(v); ok {
			return f, true
		}
		f, err := strconv.ParseFloat(v, 64)
		return f, err == nil && jsonNumber(v)
	case v == "true":
		return true, true
	case v == "false":
		return false, true
	case v == "null":
		return nil, true
	}
	return nil, false
}

// shortDecimal reads the common JSON number quickly: an optional minus,
// an integer part without leading zeros, an optional fraction, no
// exponent, at most 15 digits. Its digits then make an integer that a
// float64 holds exactly, and one division by an exact power of ten rounds
// correctly: strconv.ParseFloat's own fast path, without its generality.
// !ok: not such a number (it may still be one).
func shortDecimal(v string) (float64, bool) {
	i, neg := 0, false
	if i < len(v) && v[i] == '-' {
		i, neg = 1, true
	}
	if i == len(v) || v[i] < '0' || v[i] > '9' || v[i] == '0' && i+1 < len(v) && v[i+1] >= '0' && v[i+1] <= '9' {
		return 0, false
	}
	var mant uint64
	digits, frac := 0, -1
	for ; i < len(v); i++ {
		switch c := v[i]; {
		case c >= '0' && c <= '9':
			mant = mant*10 + uint64(c-'0')
			digits++
			if frac >= 0 {
				frac++
			}
		case c == '.' && frac < 0:
			frac = 0
		default:
			return 0, false
		}
	}
	if digits > 15 || frac == 0 {
		return 0, false
	}
	f := float64(mant)
	if frac > 0 {
		f /= pow10[frac]
	}
	if neg {
		f = -f
	}
	return f, true
}

var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

// skipValue returns the end of the JSON value at s[i]. It checks brackets
// and strings, not every rule of the grammar: what it passes is decoded
// (scalar or the full decoder) or was written by the history writer.
func skipValue(s string, i int) (int, bool) {
	if i >= len(s) {
		return 0, false
	}
	switch c := s[i]; {
	case c == '"':
		return skipString(s, i)
	case c == '{' || c == '[':
		depth := 0
		for j := i; j < len(s); j++ {
			switch s[j] {
			case '"':
				end, ok := skipString(s, j)
				if !ok {
					return 0, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	default:
		j := i
		for j < len(s) && s[j] != ',' && s[j] != '}' && s[j] != ']' && s[j] != ' ' && s[j] != '\t' && s[j] != '\n' && s[j] != '\r' {
			j++
		}
		return j, j > i
	}
}

// skipString returns the index after the string starting at s[i].
func skipString(s string, i int) (int, bool) {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}
