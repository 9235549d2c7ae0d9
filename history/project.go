package history

import (
	"fmt"
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

// The string columns come as one, concatenated by the server, with the
// lengths of all but the last: clickhouse-go scans a row column by column
// and copies each string into a new allocation, which cost more than the
// server's concat.

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

// selectList is the projection's SELECT list: the concatenated strings,
// their lengths, the message id's hash, the times.
func (p *projection) selectList() string {
	strs, ints := p.strCols()
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
	cols := []string{"concat(" + strings.Join(names, ", ") + ")"}
	for _, n := range names[:len(names)-1] {
		cols = append(cols, "length("+n+")")
	}
	// The server hashes the message ids for the dedupe (vectorised, where
	// Go would touch each id's bytes once more).
	cols = append(cols, "cityHash64(message_id)", "timestamp_ms", "received_at_ms")
	for _, c := range ints {
		cols = append(cols, colNames[c])
	}
	return strings.Join(cols, ", ")
}

// scanned is where a row is scanned to before fill splits it.
type scanned struct {
	all    string
	lens   []uint64
	idHash uint64
	ts     int64
	recv   int64
	ints   [2]int64
	dests  []any
	strs   []int
	intsOf []int
}

func (p *projection) scanner() *scanned {
	sc := &scanned{}
	sc.strs, sc.intsOf = p.strCols()
	sc.lens = make([]uint64, len(sc.strs)+1)
	sc.dests = append(sc.dests, &sc.all)
	for i := range sc.lens {
		sc.dests = append(sc.dests, &sc.lens[i])
	}
	sc.dests = append(sc.dests, &sc.idHash, &sc.ts, &sc.recv)
	for i := range sc.intsOf {
		sc.dests = append(sc.dests, &sc.ints[i])
	}
	return sc
}

// split sets x's fields from what was scanned.
func (sc *scanned) split(x *row, more bool) bool {
	at := 0
	next := func(k int) string {
		if k == len(sc.lens) {
			v := sc.all[at:]
			at = len(sc.all)
			return v
		}
		n := int(sc.lens[k])
		if n > len(sc.all)-at {
			n = len(sc.all) - at
		}
		v := sc.all[at : at+n]
		at += n
		return v
	}
	x.entity, x.messageID = next(0), next(1)
	x.idHash, x.ts, x.recv = sc.idHash, sc.ts, sc.recv
	if more {
		x.more = &rowMore{}
	}
	for k, c := range sc.strs {
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
	for k, c := range sc.intsOf {
		if c == colSentAt {
			x.more.sent = sc.ints[k]
		} else {
			x.more.orig = sc.ints[k]
		}
	}
	return at == len(sc.all)
}

// decodeKeys decodes the named top-level keys of the stored JSON object s
// into m (cleared first), as decodeMap would decode them, and returns m, or
// nil when none is there. Keys with escapes, or anything odd, take the
// full decoder.
func decodeKeys(s string, keys []string, m map[string]any) map[string]any {
	if len(s) <= 2 {
		return nil
	}
	clear(m)
	if !scanKeys(s, keys, m) {
		full := decodeMap(s)
		clear(m)
		for _, k := range keys {
			if v, ok := full[k]; ok {
				m[k] = v
			}
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// scanKeys walks the object s, decoding the values of keys into m and
// skipping the others. !ok: not the simple case, decode it all.
func scanKeys(s string, keys []string, m map[string]any) bool {
	i := skipSpace(s, 0)
	if i >= len(s) || s[i] != '{' {
		return false
	}
	i = skipSpace(s, i+1)
	if i < len(s) && s[i] == '}' {
		return skipSpace(s, i+1) == len(s)
	}
	for {
		key, j, ok := flatString(s, i)
		if !ok {
			return false
		}
		i = skipSpace(s, j)
		if i >= len(s) || s[i] != ':' {
			return false
		}
		i = skipSpace(s, i+1)
		end, ok := skipValue(s, i)
		if !ok {
			return false
		}
		if contains(keys, key) {
			v, ok := scalar(s[i:end])
			if !ok {
				var x any // apart from v, which would escape on every call
				if json.Unmarshal([]byte(s[i:end]), &x) != nil {
					return false
				}
				v = x
			}
			m[key] = v
		}
		i = skipSpace(s, end)
		if i >= len(s) {
			return false
		}
		switch s[i] {
		case ',':
			i = skipSpace(s, i+1)
		case '}':
			return skipSpace(s, i+1) == len(s)
		default:
			return false
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
