package event

import (
	"encoding/binary"
	"math/bits"
	"strings"
	"unicode/utf8"

	json "github.com/goccy/go-json"
)

// The scanner is the one pass Normalize and NormalizeBatch make over what a
// client sent: it validates the JSON strictly (RFC 8259: grammar, string
// escapes, UTF-8, surrogates in pairs), splits a batch into its items and records where each
// item's top-level fields lie, so that the record can be written by copying
// those bytes. No JSON library offers validate, split and extract fused in
// one pass without building values, which is why it is written here.
//
// It never explains a problem. Invalid JSON makes it return false and the
// caller takes the reference path (Decode, DecodeBatch), which words the
// error; valid JSON that Decode might read differently from the fast path
// (a number beyond float64, an escaped or non-ASCII key, a duplicate field,
// a field spelt in another case) marks the item slow, and the item takes
// Decode's path. So the fast path only ever handles what it reads exactly
// as Decode does, and FuzzNormalize and FuzzNormalizeBatch check that.
type scanner struct {
	b     []byte
	i     int
	depth int
	ws    bool // whitespace seen between tokens since the item began
	slow  bool // the current item is valid but takes Decode's path
}

// maxDepth bounds nesting; deeper (valid) JSON takes the reference path,
// which has its own limit.
const maxDepth = 500

// field indexes the top-level event fields the fast path reads.
type field uint8

const (
	fType field = iota
	fAction
	fMessageID
	fUserID
	fAnonymousID
	fPreviousID
	fGroupID
	fEvent
	fName
	fCategory
	fProperties
	fTraits
	fContext
	fIntegrations
	fTimestamp
	fOriginalTimestamp
	fSentAt
	fFeatureSet
	numFields
	noField field = 255
)

// maxScan bounds what is scanned, so that offsets fit a span; anything
// longer (far beyond any configured body limit) takes the reference path.
const maxScan = 1<<31 - 1

// span is where a value lies in the scanned bytes; end 0 means absent.
type span struct{ start, end int32 }

// itemScan is what the scanner found in one event object.
type itemScan struct {
	raw  span
	f    [numFields]span
	slow bool // take Decode's path
	ws   bool // whitespace inside: nested objects are compacted when copied
}

// skipWS moves past whitespace; compact JSON costs one inlined test.
func (s *scanner) skipWS() {
	if s.i < len(s.b) && s.b[s.i] > ' ' {
		return
	}
	s.skipWSLoop()
}

//go:noinline
func (s *scanner) skipWSLoop() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
			s.ws = true
		default:
			return
		}
	}
}

const ones = 0x0101010101010101

// str moves past the string at s.i (which is '"'), validating escapes and
// UTF-8. esc reports a backslash escape, high a byte from 0x80.
func (s *scanner) str() (esc, high, ok bool) {
	b := s.b
	i := s.i + 1
	for {
		// Eight bytes at a time until one is '"', '\\', a control byte or
		// from 0x80. Each test flags its lowest hit exactly (borrows only
		// run upwards from a hit), so the lowest flag is a real one.
		for i+16 <= len(b) {
			if m := special(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				goto found
			}
			if m := special(binary.LittleEndian.Uint64(b[i+8:])); m != 0 {
				i += 8 + bits.TrailingZeros64(m)>>3
				goto found
			}
			i += 16
		}
		for i+8 <= len(b) {
			if m := special(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
	found:
		if i >= len(b) {
			return esc, high, false
		}
		switch c := b[i]; {
		case c == '"':
			s.i = i + 1
			return esc, high, true
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				return esc, high, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return esc, high, false
				}
				if b[i+2]|0x20 != 'd' || b[i+3] < '8' {
					i += 6
					break
				}
				// A surrogate: only a high half followed by a low one is
				// text; Decode refuses anything else, naming the field.
				n, ok := surrogateEscape(b, i)
				if !ok {
					return esc, high, false
				}
				i += n
			default:
				return esc, high, false
			}
		case c < 0x20:
			return esc, high, false
		case c >= 0x80:
			high = true
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size <= 1 {
				return esc, high, false
			}
			i += size
		default:
			i++
		}
	}
}

// key moves past a member's key: short and plain in practice, so a byte
// loop beats str's eight-byte one.
func (s *scanner) key() bool {
	b := s.b
	if s.i >= len(b) || b[s.i] != '"' {
		return false
	}
	i := s.i + 1
	for i < len(b) && plainByte[b[i]] {
		i++
	}
	if i < len(b) && b[i] == '"' {
		s.i = i + 1
		return true
	}
	_, _, ok := s.str()
	return ok
}

// plainByte marks the bytes a string holds as they are: not '"', '\', a
// control byte or from 0x80.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// special flags, in the high bit of each byte, the bytes of w that end a
// plain run in a string: '"', '\\', a control byte or one from 0x80.
func special(w uint64) uint64 {
	q := w ^ ('"' * ones)
	bs := w ^ ('\\' * ones)
	return (((q - ones) &^ q) | ((bs - ones) &^ bs) | (w - 0x20*ones) | w) & (0x80 * ones)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// num moves past the number at s.i. One with an exponent or very many
// digits may be beyond float64, which Decode refuses: its item is slow.
func (s *scanner) num() bool {
	b, i := s.b, s.i
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return false
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		if i == d {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		s.slow = true
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		if i == d {
			return false
		}
	}
	if i-s.i > 300 {
		s.slow = true
	}
	s.i = i
	return true
}

func (s *scanner) lit(word string) bool {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return false
	}
	s.i += len(word)
	return true
}

// value moves past any JSON value at s.i.
func (s *scanner) value() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; c {
	case '"':
		_, _, ok := s.str()
		return ok
	case '{':
		return s.container('}')
	case '[':
		return s.container(']')
	case 't':
		return s.lit("true")
	case 'f':
		return s.lit("false")
	case 'n':
		return s.lit("null")
	default:
		if c == '-' || isDigit(c) {
			return s.num()
		}
	}
	return false
}

// container moves past the object or array at s.i, whose closing byte is
// close: an object's members are key, colon, value; an array's items are
// values.
func (s *scanner) container(close byte) bool {
	if s.depth++; s.depth > maxDepth {
		return false
	}
	s.i++
	s.skipWS()
	if s.i < len(s.b) && s.b[s.i] == close {
		s.i++
		s.depth--
		return true
	}
	for {
		if close == '}' && (!s.key() || !s.colon()) || !s.value() {
			return false
		}
		switch s.next(close) {
		case 0:
			return false
		case close:
			s.depth--
			return true
		}
	}
}

// colon moves past the ':' after a key and the whitespace around it.
func (s *scanner) colon() bool {
	s.skipWS()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return false
	}
	s.i++
	s.skipWS()
	return true
}

// next moves past the ',' or the closing byte after a member. It returns
// ',' (and skips the whitespace after it), close, or 0 for anything else.
func (s *scanner) next(close byte) byte {
	s.skipWS()
	if s.i >= len(s.b) {
		return 0
	}
	switch c := s.b[s.i]; c {
	case ',':
		s.i++
		s.skipWS()
		return ','
	case close:
		s.i++
		return close
	}
	return 0
}

// item scans the event object at s.i into it.
func (s *scanner) item(it *itemScan) bool {
	*it = itemScan{}
	start := s.i
	s.slow, s.ws = false, false
	if s.depth++; s.depth > maxDepth {
		return false
	}
	s.i++
	s.skipWS()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
	} else {
		for {
			if s.i >= len(s.b) || s.b[s.i] != '"' {
				return false
			}
			ks := s.i
			esc, high, ok := s.str()
			if !ok {
				return false
			}
			f := noField
			if esc || high {
				// encoding/json unescapes keys and folds case beyond
				// ASCII ("ſentAt" is sentAt).
				s.slow = true
			} else {
				var odd bool
				f, odd = eventField(s.b[ks+1 : s.i-1])
				s.slow = s.slow || odd
			}
			if !s.colon() {
				return false
			}
			vs := s.i
			if f != noField && (f < fProperties || f >= fTimestamp) {
				// A field read as a string: Decode unescapes it.
				if vs < len(s.b) && s.b[vs] == '"' {
					if esc, _, ok := s.str(); !ok {
						return false
					} else if esc {
						s.slow = true
					}
				} else if !s.value() {
					return false
				}
			} else if !s.value() {
				return false
			}
			if f != noField {
				if it.f[f].end != 0 {
					s.slow = true // a duplicate: encoding/json keeps the last
				}
				it.f[f] = span{int32(vs), int32(s.i)}
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
	s.depth--
	it.raw = span{int32(start), int32(s.i)}
	it.slow, it.ws = s.slow, s.ws
	return true
}

// eventField returns the field a key names. odd reports a key that
// encoding/json would match to a field case-insensitively.
func eventField(k []byte) (f field, odd bool) {
	switch string(k) {
	case "type":
		return fType, false
	case "action":
		return fAction, false
	case "messageId":
		return fMessageID, false
	case "userId":
		return fUserID, false
	case "anonymousId":
		return fAnonymousID, false
	case "previousId":
		return fPreviousID, false
	case "groupId":
		return fGroupID, false
	case "event":
		return fEvent, false
	case "name":
		return fName, false
	case "category":
		return fCategory, false
	case "properties":
		return fProperties, false
	case "traits":
		return fTraits, false
	case "context":
		return fContext, false
	case "integrations":
		return fIntegrations, false
	case "timestamp":
		return fTimestamp, false
	case "originalTimestamp":
		return fOriginalTimestamp, false
	case "sentAt":
		return fSentAt, false
	case "featureSet":
		return fFeatureSet, false
	}
	return noField, foldsTo(k, knownFields)
}

// foldsTo reports whether k, lowercased, is a key of lower.
func foldsTo(k []byte, lower map[string]string) bool {
	if len(k) > 32 {
		return false
	}
	var buf [32]byte
	for i, c := range k {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	_, ok := lower[string(buf[:len(k)])]
	return ok
}

// batch fields the fast path reads.
const (
	bBatch = iota
	bContext
	bIntegrations
	bWriteKey
	bSentAt
	numBatchFields
)

var batchFields = map[string]string{"batch": "batch", "context": "context", "integrations": "integrations", "writekey": "writeKey", "sentat": "sentAt"}

// batchScan is what the scanner found in a batch body.
type batchScan struct {
	f     [numBatchFields]span
	items []itemScan
}

// batch scans a whole /v1/batch body. false means the reference path
// must read it: invalid JSON, or anything at the top level out of the
// ordinary.
func (s *scanner) batch(bs *batchScan) bool {
	bs.items = bs.items[:0]
	bs.f = [numBatchFields]span{}
	s.skipWS()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	s.depth++
	s.i++
	s.skipWS()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		return false // no batch: DecodeBatch words it
	}
	for {
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return false
		}
		ks := s.i
		esc, high, ok := s.str()
		if !ok || esc || high {
			return false
		}
		f := -1
		switch string(s.b[ks+1 : s.i-1]) {
		case "batch":
			f = bBatch
		case "context":
			f = bContext
		case "integrations":
			f = bIntegrations
		case "writeKey":
			f = bWriteKey
		case "sentAt":
			f = bSentAt
		default:
			if foldsTo(s.b[ks+1:s.i-1], batchFields) {
				return false
			}
		}
		if !s.colon() {
			return false
		}
		vs := s.i
		if f == bBatch {
			if !s.items(bs) {
				return false
			}
		} else {
			s.slow = false
			if !s.value() || s.slow {
				return false
			}
		}
		if f >= 0 {
			if bs.f[f].end != 0 {
				return false
			}
			bs.f[f] = span{int32(vs), int32(s.i)}
		}
		c := s.next('}')
		if c == 0 {
			return false
		}
		if c == '}' {
			break
		}
	}
	s.depth--
	s.skipWS()
	return s.i == len(s.b) && bs.f[bBatch].end != 0
}

// items scans the batch array; an item that is not an object is kept as
// a slow item for Decode to reject.
func (s *scanner) items(bs *batchScan) bool {
	if s.i >= len(s.b) || s.b[s.i] != '[' {
		return false
	}
	s.depth++
	s.i++
	s.skipWS()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		s.depth--
		return true
	}
	for {
		bs.items = append(bs.items, itemScan{})
		it := &bs.items[len(bs.items)-1]
		if s.i < len(s.b) && s.b[s.i] == '{' {
			if !s.item(it) {
				return false
			}
		} else {
			start := s.i
			if !s.value() {
				return false
			}
			it.raw = span{int32(start), int32(s.i)}
			it.slow = true
		}
		switch s.next(']') {
		case 0:
			return false
		case ']':
			s.depth--
			return true
		}
	}
}

// BodyString returns the value of the top-level string member name of a
// JSON object body (matched as encoding/json matches field names, the
// last one winning), without decoding anything else: servers read the
// API key a body carries with it before they parse the body. A body cut
// short or invalid further on still gives the members before the fault;
// ok is false when no such string member was found.
func BodyString(body []byte, name string) (value string, ok bool) {
	s := scanner{b: body}
	s.skipWS()
	if s.i >= len(body) || body[s.i] != '{' {
		return "", false
	}
	s.i++
	s.skipWS()
	for s.i < len(body) && body[s.i] == '"' {
		ks := s.i
		if !s.key() {
			break
		}
		key := body[ks+1 : s.i-1]
		if !s.colon() {
			break
		}
		vs := s.i
		if !s.value() {
			break
		}
		if body[vs] == '"' && strings.EqualFold(unsafeString(key), name) {
			var v string
			if json.Unmarshal(body[vs:s.i], &v) == nil {
				value, ok = v, true
			}
		}
		if s.next('}') != ',' {
			break
		}
	}
	return value, ok
}

// BodyHas reports whether body is an object with a top-level member name
// (compared as BodyString does), without parsing the members' values
// beyond skipping them.
func BodyHas(body []byte, name string) bool {
	s := scanner{b: body}
	s.skipWS()
	if s.i >= len(body) || body[s.i] != '{' {
		return false
	}
	s.i++
	s.skipWS()
	for s.i < len(body) && body[s.i] == '"' {
		ks := s.i
		if !s.key() {
			return false
		}
		if strings.EqualFold(unsafeString(body[ks+1:s.i-1]), name) {
			return true
		}
		if !s.colon() || !s.value() || s.next('}') != ',' {
			return false
		}
	}
	return false
}
