package event

import (
	"slices"
	"strconv"
	"strings"
	"time"

	json "github.com/goccy/go-json"
)

// A Projection reads pulse.events records as Unmarshal does, but builds
// only the map keys a reader needs: the stream decodes every record, and
// a record's properties, traits and context are most of its bytes and
// nearly all of its allocations, while its features read a few keys.
//
// The records it accepts and the errors it gives are Unmarshal's: it
// validates the whole record with the scanner (strict RFC 8259) and
// hands anything out of the ordinary (invalid JSON, a number Unmarshal
// might refuse, an escaped, duplicate or case-folded top-level key, a
// field of the wrong type, an escaped key in a projected map) to
// Unmarshal itself. FuzzProjection checks that.
type Projection struct {
	all bool
	// maps are, per map field (properties, traits, context,
	// integrations), the top-level keys to keep; whole keeps the map.
	maps  [4][]string
	whole [4]bool
}

// NewProjection returns the Projection keeping the dotted paths, as
// Lookup takes them: a path into a map keeps the whole value of its
// first key ("properties.address.city" keeps properties["address"]); a
// bare map name keeps the map. Top-level fields are always kept. all
// keeps everything: the result is then Unmarshal's.
func NewProjection(paths []string, all bool) *Projection {
	p := &Projection{all: all}
	for _, path := range paths {
		head, rest, _ := strings.Cut(path, ".")
		i := mapIndex(head)
		if i < 0 {
			continue
		}
		if rest == "" {
			p.whole[i] = true
			continue
		}
		k, _, _ := strings.Cut(rest, ".")
		if !slices.Contains(p.maps[i], k) {
			p.maps[i] = append(p.maps[i], k)
		}
	}
	return p
}

func mapIndex(name string) int {
	switch name {
	case "properties":
		return 0
	case "traits":
		return 1
	case "context":
		return 2
	case "integrations":
		return 3
	}
	return -1
}

// Unmarshal decodes the record b into e (overwriting it) and checks it as
// Unmarshal does, with the same error for the same record. Of the maps,
// e is sure to hold the projected keys only (a map without any of them
// may be empty or nil); there may be others.
//
// e's maps are reused: cleared and filled again, so a reader decoding
// record after record into one Event allocates no map. Keep no map of e
// (values taken out of them are safe) across calls.
func (p *Projection) Unmarshal(b []byte, e *Event) error {
	if !p.all && p.fast(b, e) {
		return e.checkRecord()
	}
	ref, err := Unmarshal(b)
	if err != nil {
		return err
	}
	*e = *ref
	return nil
}

// The fields of a record, as Event's JSON names them.
const (
	rType = iota
	rMessageID
	rUserID
	rAnonymousID
	rPreviousID
	rGroupID
	rEvent
	rName
	rFeatureSet
	rProperties // the four maps, in mapIndex order
	rTraits
	rContext
	rIntegrations
	rTimestamp
	rOriginalTimestamp
	rSentAt
	rReceivedAt
	rNone = -1
)

func recordField(k []byte) int {
	switch string(k) {
	case "type":
		return rType
	case "messageId":
		return rMessageID
	case "userId":
		return rUserID
	case "anonymousId":
		return rAnonymousID
	case "previousId":
		return rPreviousID
	case "groupId":
		return rGroupID
	case "event":
		return rEvent
	case "name":
		return rName
	case "featureSet":
		return rFeatureSet
	case "properties":
		return rProperties
	case "traits":
		return rTraits
	case "context":
		return rContext
	case "integrations":
		return rIntegrations
	case "timestamp":
		return rTimestamp
	case "originalTimestamp":
		return rOriginalTimestamp
	case "sentAt":
		return rSentAt
	case "receivedAt":
		return rReceivedAt
	}
	return rNone
}

// recordFields are Event's JSON names, lowercased: a key folding to one
// of them names that field for the JSON decoder.
var recordFields = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"type", "messageId", "userId", "anonymousId", "previousId", "groupId", "event",
		"name", "featureSet", "properties", "traits", "context", "integrations", "timestamp",
		"originalTimestamp", "sentAt", "receivedAt"} {
		m[strings.ToLower(k)] = k
	}
	return m
}()

// fast decodes b into e; false sends the record to Unmarshal.
func (p *Projection) fast(b []byte, e *Event) bool {
	old := e.reusable()
	*e = Event{}
	if len(b) > maxScan {
		return false
	}
	s := scanner{b: b}
	s.skipWS()
	if s.i >= len(b) || b[s.i] != '{' {
		return false
	}
	s.depth = 1
	s.i++
	s.skipWS()
	if s.i < len(b) && b[s.i] == '}' {
		s.i++
	} else {
		var have uint32
		for {
			if s.i >= len(b) || b[s.i] != '"' {
				return false
			}
			ks := s.i
			esc, high, ok := s.str()
			if !ok || esc || high {
				return false
			}
			k := b[ks+1 : s.i-1]
			f := recordField(k)
			if f == rNone && foldsTo(k, recordFields) {
				return false
			}
			if !s.colon() {
				return false
			}
			if f == rNone {
				if !s.value() {
					return false
				}
			} else {
				if have&(1<<f) != 0 {
					return false // a duplicate: the decoder merges maps
				}
				have |= 1 << f
				if !p.field(&s, e, f, &old) {
					return false
				}
			}
			c := s.next('}')
			if c == 0 {
				return false
			}
			if c == '}' {
				break
			}
		}
	}
	s.skipWS()
	return s.i == len(b) && !s.slow
}

// reused is what a decode takes over from the Event's last record.
type reused struct {
	maps      [4]map[string]any
	typ, name Type // type; event name, as a Type to share text's code
}

func (e *Event) reusable() reused {
	return reused{maps: [4]map[string]any{e.Properties, e.Traits, e.Context, e.Integrations},
		typ: e.Type, name: Type(e.Event)}
}

// field decodes the value at s.i into e's field f.
func (p *Projection) field(s *scanner, e *Event, f int, old *reused) bool {
	switch {
	case f == rType || f == rEvent:
		// The same few names come again and again: no new string then.
		prev := &old.typ
		if f == rEvent {
			prev = &old.name
		}
		v, ok := textAs(s, *prev)
		if !ok {
			return false
		}
		if f == rType {
			e.Type = v
		} else {
			e.Event = string(v)
		}
		return true
	case f <= rFeatureSet:
		v, ok := text(s)
		if !ok {
			return false
		}
		switch f {
		case rMessageID:
			e.MessageID = v
		case rUserID:
			e.UserID = v
		case rAnonymousID:
			e.AnonymousID = v
		case rPreviousID:
			e.PreviousID = v
		case rGroupID:
			e.GroupID = v
		case rName:
			e.Name = v
		case rFeatureSet:
			e.FeatureSet = v
		}
		return true
	case f <= rIntegrations:
		m, ok := p.object(s, f-rProperties, old.maps[f-rProperties])
		if !ok {
			return false
		}
		switch f {
		case rProperties:
			e.Properties = m
		case rTraits:
			e.Traits = m
		case rContext:
			e.Context = m
		case rIntegrations:
			e.Integrations = m
		}
		return true
	}
	var t time.Time
	if s.lit("null") {
		// the zero time, as time.Time's UnmarshalJSON leaves it
	} else if s.i < len(s.b) && s.b[s.i] == '"' {
		start := s.i
		if _, _, ok := s.str(); !ok {
			return false
		}
		// What the JSON decoder calls with the same bytes.
		if t.UnmarshalJSON(s.b[start:s.i]) != nil {
			return false
		}
	} else {
		return false
	}
	switch f {
	case rTimestamp:
		e.Timestamp = t
	case rOriginalTimestamp:
		e.OriginalTimestamp = t
	case rSentAt:
		e.SentAt = t
	case rReceivedAt:
		e.ReceivedAt = t
	}
	return true
}

// textAs reads a string or null, as prev when the text is the same.
func textAs(s *scanner, prev Type) (Type, bool) {
	if n := len(prev); s.i+n+2 <= len(s.b) && s.b[s.i] == '"' && s.b[s.i+n+1] == '"' &&
		string(s.b[s.i+1:s.i+n+1]) == string(prev) && plain(prev) {
		s.i += n + 2
		return prev, true
	}
	v, ok := text(s)
	return Type(v), ok
}

// plain reports whether a string's JSON text is its bytes between quotes.
func plain(s Type) bool {
	for i := 0; i < len(s); i++ {
		if !plainByte[s[i]] {
			return false
		}
	}
	return true
}

// text reads a string or null.
func text(s *scanner) (string, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return "", s.lit("null")
	}
	start := s.i
	esc, _, ok := s.str()
	if !ok {
		return "", false
	}
	if !esc {
		return string(s.b[start+1 : s.i-1]), true
	}
	var v string
	return v, json.Unmarshal(s.b[start:s.i], &v) == nil
}

// object reads the map field i (an object or null), keeping the
// projected keys, in m when it is not nil.
func (p *Projection) object(s *scanner, i int, m map[string]any) (map[string]any, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return nil, s.lit("null")
	}
	start := s.i
	if p.whole[i] {
		if !s.value() {
			return nil, false
		}
		var m map[string]any
		return m, json.Unmarshal(s.b[start:s.i], &m) == nil
	}
	keys := p.maps[i]
	if len(keys) == 0 {
		return nil, s.value()
	}
	clear(m)
	s.depth++
	s.i++
	s.skipWS()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		s.depth--
		return m, true
	}
	for {
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return nil, false
		}
		ks := s.i
		esc, _, ok := s.str()
		if !ok || esc {
			return nil, false // an escaped key: the decoder unescapes it
		}
		k := s.b[ks+1 : s.i-1]
		want := slices.Index(keys, string(k))
		if !s.colon() {
			return nil, false
		}
		if want >= 0 {
			v, ok := anyValue(s)
			if !ok {
				return nil, false
			}
			if m == nil {
				m = make(map[string]any, len(keys))
			}
			m[keys[want]] = v // the projection's string: no new key
		} else if !s.value() {
			return nil, false
		}
		switch s.next('}') {
		case 0:
			return nil, false
		case '}':
			s.depth--
			return m, true
		}
	}
}

// anyValue reads any JSON value as the decoder does into an any.
func anyValue(s *scanner) (any, bool) {
	if s.i >= len(s.b) {
		return nil, false
	}
	start := s.i
	switch c := s.b[s.i]; {
	case c == '"':
		esc, _, ok := s.str()
		if !ok {
			return nil, false
		}
		if !esc {
			return string(s.b[start+1 : s.i-1]), true
		}
	case c == 't':
		return true, s.lit("true")
	case c == 'f':
		return false, s.lit("false")
	case c == 'n':
		return nil, s.lit("null")
	case c == '-' || isDigit(c):
		// A number the scanner marks slow sends the record to Unmarshal.
		if !s.num() || s.slow {
			return nil, false
		}
		f, err := strconv.ParseFloat(string(s.b[start:s.i]), 64)
		return f, err == nil
	default:
		if !s.value() {
			return nil, false
		}
	}
	var v any
	return v, json.Unmarshal(s.b[start:s.i], &v) == nil
}
