package event

import (
	"encoding/binary"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/pulse-rt/pulse/internal/jsonstr"
	"github.com/valyala/fastjson"
)

// Normalizer turns a client's event JSON into its pulse.events record value
// without building the event's maps: nested objects (properties, traits,
// context, integrations) are copied through as parsed. It applies exactly
// the rules of Decode and writes exactly what Marshal(Decode(raw)) would
// decode back to; ingest uses it because it is several times cheaper.
//
// A Normalizer reuses its parser's memory: it is not safe for concurrent
// use (keep one per goroutine, or pool them).
type Normalizer struct {
	p fastjson.Parser
}

// Normalized says what Normalize produced.
type Normalized struct {
	Type     Type
	EntityID string
}

// Normalize validates raw and appends its normalised JSON to dst. Errors are
// *FieldError, as from Decode.
func (n *Normalizer) Normalize(dst, raw []byte, now time.Time, lim Limits, d Defaults) ([]byte, Normalized, error) {
	if lim.MaxEventBytes > 0 && len(raw) > lim.MaxEventBytes {
		return dst, Normalized{}, fieldErr("", "event is %d bytes, over the %d byte limit", len(raw), lim.MaxEventBytes)
	}
	// fastjson's parser is lax (leading zeros, bad escapes...); its
	// validator is strict. Invalid JSON takes Decode's path for its error.
	if !plain(raw) || fastjson.ValidateBytes(raw) != nil {
		return slowNormalize(dst, raw, now, lim, d)
	}
	v, err := n.p.ParseBytes(raw)
	if err != nil || v.Type() != fastjson.TypeObject || needsSlowPath(v, d) {
		// Anything unusual (invalid JSON, a page category to move into
		// properties, a batch context to merge) takes Decode's path, so the
		// two can never disagree.
		return slowNormalize(dst, raw, now, lim, d)
	}
	o, _ := v.Object()
	e := Event{ReceivedAt: now.UTC()}
	t := d.Type
	if t == "" {
		tv := o.Get("type")
		if tv == nil || tv.Type() == fastjson.TypeNull {
			tv = o.Get("action")
		}
		if tv == nil || tv.Type() == fastjson.TypeNull {
			return dst, Normalized{}, fieldErr("type", "required (track, identify, page, screen, group or alias)")
		}
		if tv.Type() != fastjson.TypeString {
			return dst, Normalized{}, fieldErr("type", "must be a string")
		}
		t = Type(tv.GetStringBytes())
		if !t.Valid() {
			return dst, Normalized{}, fieldErr("type", "unknown type %q (want track, identify, page, screen, group or alias)", string(t))
		}
	}
	e.Type = t
	str := func(field string, numberOK bool) (string, error) {
		fv := o.Get(field)
		if fv == nil {
			return "", nil
		}
		switch fv.Type() {
		case fastjson.TypeNull:
			return "", nil
		case fastjson.TypeString:
			return string(fv.GetStringBytes()), nil
		case fastjson.TypeNumber:
			if numberOK {
				f, _ := fv.Float64()
				return strconv.FormatFloat(f, 'f', -1, 64), nil
			}
		}
		if numberOK {
			return "", fieldErr(field, "must be a string or a number")
		}
		return "", fieldErr(field, "must be a string")
	}
	if e.MessageID, err = str("messageId", false); err != nil {
		return dst, Normalized{}, err
	}
	if len(e.MessageID) > MaxMessageIDLen {
		return dst, Normalized{}, fieldErr("messageId", "is %d characters, over the %d limit", len(e.MessageID), MaxMessageIDLen)
	}
	if e.UserID, err = str("userId", true); err != nil {
		return dst, Normalized{}, err
	}
	if e.AnonymousID, err = str("anonymousId", true); err != nil {
		return dst, Normalized{}, err
	}
	if e.PreviousID, err = str("previousId", true); err != nil {
		return dst, Normalized{}, err
	}
	if e.GroupID, err = str("groupId", true); err != nil {
		return dst, Normalized{}, err
	}
	if e.Event, err = str("event", false); err != nil {
		return dst, Normalized{}, err
	}
	if e.Name, err = str("name", false); err != nil {
		return dst, Normalized{}, err
	}
	if e.FeatureSet, err = str("featureSet", false); err != nil {
		return dst, Normalized{}, err
	}
	var objs [4]*fastjson.Value
	for i, field := range objectFields {
		fv := o.Get(field)
		if fv == nil || fv.Type() == fastjson.TypeNull {
			continue
		}
		if fv.Type() != fastjson.TypeObject {
			return dst, Normalized{}, fieldErr(field, "must be an object")
		}
		objs[i] = fv
	}
	if cv := o.Get("category"); cv != nil && cv.Type() != fastjson.TypeNull && cv.Type() != fastjson.TypeString {
		return dst, Normalized{}, fieldErr("category", "must be a string")
	}
	if err := e.checkIDs(); err != nil {
		return dst, Normalized{}, err
	}
	ts, err := fastTime("timestamp", o.Get("timestamp"))
	if err != nil {
		return dst, Normalized{}, err
	}
	orig, err := fastTime("originalTimestamp", o.Get("originalTimestamp"))
	if err != nil {
		return dst, Normalized{}, err
	}
	sent, err := fastTime("sentAt", o.Get("sentAt"))
	if err != nil {
		return dst, Normalized{}, err
	}
	if err := e.setTimes(ts, orig, sent, d.SentAt); err != nil {
		return dst, Normalized{}, err
	}
	if e.MessageID == "" {
		e.MessageID = uuid.NewString()
	}

	// The same fields, in the same order, as Event's JSON.
	dst = append(dst, `{"type":`...)
	dst = jsonstr.Append(dst, string(e.Type))
	dst = append(dst, `,"messageId":`...)
	dst = jsonstr.Append(dst, e.MessageID)
	dst = appendOptString(dst, `,"userId":`, e.UserID)
	dst = appendOptString(dst, `,"anonymousId":`, e.AnonymousID)
	dst = appendOptString(dst, `,"previousId":`, e.PreviousID)
	dst = appendOptString(dst, `,"groupId":`, e.GroupID)
	dst = appendOptString(dst, `,"event":`, e.Event)
	dst = appendOptString(dst, `,"name":`, e.Name)
	for i, field := range objectFields {
		if objs[i] == nil || objs[i].GetObject().Len() == 0 {
			continue
		}
		dst = append(dst, ',', '"')
		dst = append(dst, field...)
		dst = append(dst, '"', ':')
		dst = objs[i].MarshalTo(dst)
	}
	dst = appendTime(dst, `,"timestamp":`, e.Timestamp)
	if !e.OriginalTimestamp.IsZero() {
		dst = appendTime(dst, `,"originalTimestamp":`, e.OriginalTimestamp)
	}
	if !e.SentAt.IsZero() {
		dst = appendTime(dst, `,"sentAt":`, e.SentAt)
	}
	dst = appendTime(dst, `,"receivedAt":`, e.ReceivedAt)
	dst = appendOptString(dst, `,"featureSet":`, e.FeatureSet)
	dst = append(dst, '}')
	return dst, Normalized{Type: e.Type, EntityID: e.EntityID()}, nil
}

// plain reports whether raw is valid UTF-8 with no control bytes inside
// strings (whitespace between tokens is fine). fastjson is laxer than
// encoding/json about control bytes in strings, so anything else takes
// Decode's path.
func plain(raw []byte) bool {
	if printableASCII(raw) {
		return true // compact JSON as libraries send it: the common case
	}
	in, esc := false, false
	for _, c := range raw {
		switch {
		case esc:
			esc = false
		case c == '\\' && in:
			esc = true
		case c == '"':
			in = !in
		case c < 0x20 && (in || (c != ' ' && c != '\t' && c != '\n' && c != '\r')):
			return false
		}
	}
	return utf8.Valid(raw)
}

// printableASCII reports whether every byte is in 0x20..0x7f, eight bytes
// at a time: a byte below 0x20 or from 0x80 sets its high bit in
// (w - 0x20...) | w.
func printableASCII(b []byte) bool {
	const lo, hi = 0x2020202020202020, 0x8080808080808080
	i := 0
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		if ((w-lo)|w)&hi != 0 {
			return false
		}
	}
	for ; i < len(b); i++ {
		if b[i] < 0x20 || b[i] >= 0x80 {
			return false
		}
	}
	return true
}

var objectFields = [4]string{"properties", "traits", "context", "integrations"}

func needsSlowPath(v *fastjson.Value, d Defaults) bool {
	if len(d.Context) > 0 || len(d.Integrations) > 0 {
		return true
	}
	if c := v.Get("category"); c != nil && c.Type() == fastjson.TypeString {
		return true
	}
	// Duplicate keys: encoding/json keeps the last, fastjson the first;
	// and encoding/json matches field names case-insensitively.
	o, _ := v.Object()
	return unusualKeys(o)
}

// knownFields maps each event field Decode reads, lowercased, to its
// spelling.
var knownFields = func() map[string]string {
	m := map[string]string{}
	for _, f := range []string{"type", "action", "messageId", "userId", "anonymousId", "previousId", "groupId",
		"event", "name", "category", "properties", "traits", "context", "integrations", "timestamp",
		"originalTimestamp", "sentAt", "featureSet"} {
		m[strings.ToLower(f)] = f
	}
	return m
}()

// unusualKeys reports a duplicate key, a known field spelt in another case,
// or more keys than an event has: the cases where fastjson and
// encoding/json would read the object differently. It does not allocate.
func unusualKeys(o *fastjson.Object) bool {
	if o.Len() > 64 {
		return true
	}
	var keys [64][]byte
	n := 0
	odd := false
	o.Visit(func(k []byte, _ *fastjson.Value) {
		if odd {
			return
		}
		for i := 0; i < n; i++ {
			if string(keys[i]) == string(k) {
				odd = true
				return
			}
		}
		keys[n] = k
		n++
		if len(k) > len("originalTimestamp") {
			return
		}
		var lower [32]byte
		for i, c := range k {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			lower[i] = c
		}
		if f, ok := knownFields[string(lower[:len(k)])]; ok && f != string(k) {
			odd = true
		}
	})
	return odd
}

func slowNormalize(dst, raw []byte, now time.Time, lim Limits, d Defaults) ([]byte, Normalized, error) {
	e, err := Decode(raw, now, lim, d)
	if err != nil {
		return dst, Normalized{}, err
	}
	b, err := e.Marshal()
	if err != nil {
		return dst, Normalized{}, fieldErr("", "cannot encode event: %s", err)
	}
	return append(dst, b...), Normalized{Type: e.Type, EntityID: e.EntityID()}, nil
}

func fastTime(field string, v *fastjson.Value) (time.Time, error) {
	if v == nil {
		return time.Time{}, nil
	}
	switch v.Type() {
	case fastjson.TypeNull:
		return time.Time{}, nil
	case fastjson.TypeString:
		return optTime(field, string(v.GetStringBytes()))
	case fastjson.TypeNumber:
		f, _ := v.Float64()
		return optTime(field, f)
	}
	return time.Time{}, fieldErr(field, "must be an ISO-8601 string")
}

func appendOptString(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	dst = append(dst, key...)
	return jsonstr.Append(dst, s)
}

func appendTime(dst []byte, key string, t time.Time) []byte {
	dst = append(dst, key...)
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}
