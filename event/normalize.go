package event

import (
	"errors"
	"strconv"
	"strings"
	"time"
	"unsafe"

	json "github.com/goccy/go-json"
	"github.com/google/uuid"
	"github.com/pulse-rt/pulse/internal/uuidtext"
)

// Normalizer turns a client's event JSON into its pulse.events record value
// without building the event's maps: one scan validates the JSON strictly
// and finds the top-level fields, and the record is written from those
// bytes, nested objects (properties, traits, context, integrations) copied
// through as sent. It applies exactly the rules of Decode and writes what
// Marshal(Decode(raw)) would decode back to; anything unusual takes Decode's
// own path. Ingest uses it because it is many times cheaper.
//
// A Normalizer reuses its memory: it is not safe for concurrent use (keep
// one per goroutine, or pool them).
type Normalizer struct {
	s     scanner
	it    itemScan
	bs    batchScan
	nums  [numFields][]byte // numeric ids, formatted
	spans []recordSpan

	times timesMemo

	// The batch's context and integrations, when it has them.
	merge       [2]batchObject
	itemMembers []member

	// The last receivedAt and timestamp formatted: a batch's items share them.
	recvAt, tsAt     time.Time
	recvText, tsText []byte
}

// member is one member of an object: its key (inside the quotes) and the
// whole member, key to value.
type member struct{ key, all span }

// members appends the members of the object at b[sp] (one the scanner
// passed). ok is false when a key has an escape: such keys are compared
// unescaped, which Decode's path does.
func members(b []byte, sp span, out []member) ([]member, bool) {
	s := scanner{b: b[:sp.end], i: int(sp.start) + 1}
	s.skipWS()
	if s.b[s.i] == '}' {
		return out, true
	}
	for {
		ks := s.i
		if esc, _, _ := s.str(); esc {
			return out, false
		}
		ke := s.i
		s.colon()
		s.value()
		out = append(out, member{key: span{int32(ks + 1), int32(ke - 1)}, all: span{int32(ks), int32(s.i)}})
		if s.next('}') != ',' {
			return out, true
		}
	}
}

// batchObject is a batch-level object to merge under each item's, its
// members compacted back to back.
type batchObject struct {
	buf     []byte
	members []member
	active  bool
}

// load lists the members of the object at b[sp]; false (Decode's path)
// for an escaped or a duplicate key.
func (o *batchObject) load(b []byte, sp span) bool {
	o.buf, o.members = o.buf[:0], o.members[:0]
	ms, ok := members(b, sp, nil)
	if !ok {
		return false
	}
	for i, m := range ms {
		key := b[m.key.start:m.key.end]
		for _, prev := range ms[:i] {
			if string(b[prev.key.start:prev.key.end]) == string(key) {
				return false
			}
		}
		start := len(o.buf)
		o.buf = appendCompact(o.buf, b[m.all.start:m.all.end])
		o.members = append(o.members, member{key: span{int32(start + 1), int32(start + 1 + len(key))}, all: span{int32(start), int32(len(o.buf))}})
	}
	o.active = len(o.members) > 0
	return true
}

// appendMerged writes field f of the item as Decode's merge makes it: the
// batch's members the item does not override, then the item's. false
// sends the item to Decode's path.
func (n *Normalizer) appendMerged(dst, b []byte, it *itemScan, f field, o *batchObject) ([]byte, bool) {
	n.itemMembers = n.itemMembers[:0]
	if sp := it.f[f]; sp.end != 0 && b[sp.start] == '{' {
		var ok bool
		if n.itemMembers, ok = members(b, sp, n.itemMembers); !ok {
			return dst, false
		}
	}
	dst = append(dst, ',', '"')
	dst = append(dst, fieldNames[f]...)
	dst = append(dst, '"', ':', '{')
	first := true
	for _, m := range o.members {
		key := o.buf[m.key.start:m.key.end]
		overridden := false
		for _, im := range n.itemMembers {
			if string(b[im.key.start:im.key.end]) == string(key) {
				overridden = true
				break
			}
		}
		if overridden {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, o.buf[m.all.start:m.all.end]...)
	}
	for _, im := range n.itemMembers {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		if it.ws {
			dst = appendCompact(dst, b[im.all.start:im.all.end])
		} else {
			dst = append(dst, b[im.all.start:im.all.end]...)
		}
	}
	return append(dst, '}'), true
}

// timesMemo is the last eventTimes answer and what it was asked.
type timesMemo struct {
	in             [5]time.Time
	ts, orig, sent time.Time
	ok             bool
}

// Normalized says what Normalize produced.
type Normalized struct {
	Type     Type
	EntityID string
}

// errSlow sends an item from the fast path to Decode's.
var errSlow = errors.New("take Decode's path")

// Normalize validates raw and appends its normalised JSON to dst. Errors are
// *FieldError, as from Decode.
func (n *Normalizer) Normalize(dst, raw []byte, now time.Time, lim Limits, d Defaults) ([]byte, Normalized, error) {
	if lim.MaxEventBytes > 0 && len(raw) > lim.MaxEventBytes {
		return dst, Normalized{}, fieldErr("", "event is %d bytes, over the %d byte limit", len(raw), lim.MaxEventBytes)
	}
	if len(d.Context) > 0 || len(d.Integrations) > 0 {
		// A batch context to merge under the event's.
		return slowNormalize(dst, raw, now, lim, d)
	}
	if len(raw) > maxScan {
		return slowNormalize(dst, raw, now, lim, d)
	}
	n.s = scanner{b: raw}
	n.s.skipWS()
	if n.s.i >= len(raw) || raw[n.s.i] != '{' || !n.s.item(&n.it) || n.it.slow {
		return slowNormalize(dst, raw, now, lim, d)
	}
	if n.s.skipWS(); n.s.i != len(raw) {
		return slowNormalize(dst, raw, now, lim, d)
	}
	n.merge[0].active, n.merge[1].active = false, false
	out, t, key, err := n.build(dst, raw, &n.it, now, d)
	if err == errSlow {
		return slowNormalize(dst, raw, now, lim, d)
	}
	if err != nil {
		return dst, Normalized{}, err
	}
	return out, Normalized{Type: t, EntityID: string(out[key.start:key.end])}, nil
}

// NormalizedBatch is a /v1/batch body after NormalizeBatch: each item's
// record, or why it was rejected. Its memory is reused by the next
// NormalizeBatch into it.
type NormalizedBatch struct {
	WriteKey string
	Items    []BatchItem
	buf      []byte // every record's value and key
}

// BatchItem is one item of a batch.
type BatchItem struct {
	Raw   []byte // the item as sent: a slice of the body
	Type  Type
	Key   []byte // the record's key (the entity id) and value
	Value []byte
	Err   error // a *FieldError when the item is rejected; Key and Value are nil
}

type recordSpan struct{ v0, v1, k0, k1 int }

// NormalizeBatch validates and normalises a /v1/batch body into b: the
// writeKey and, item by item, the record or the item's *FieldError, exactly
// as DecodeBatch and Normalize of each item would. An error is about the
// whole request, as from DecodeBatch. Raw slices alias body; Key and Value
// are valid until b is reused.
//
// The body is scanned once: items are split, validated and their records
// written from the scanned bytes, a batch-level context and integrations
// merged under the item's. A body out of the ordinary (invalid JSON, a
// limit exceeded, an escaped or duplicate key at the top) takes
// DecodeBatch's path, which words the errors.
func (n *Normalizer) NormalizeBatch(b *NormalizedBatch, body []byte, now time.Time, lim Limits) error {
	if n.fastBatch(b, body, now, lim) {
		return nil
	}
	db, err := DecodeBatch(body, lim)
	if err != nil {
		return err
	}
	b.reset()
	b.WriteKey = db.WriteKey
	n.spans = n.spans[:0]
	for _, raw := range db.Items {
		n.add(b, raw, now, lim, db.Defaults, nil)
	}
	n.finish(b)
	return nil
}

func (b *NormalizedBatch) reset() {
	b.WriteKey = ""
	clear(b.Items)
	b.Items = b.Items[:0]
	b.buf = b.buf[:0]
}

// fastBatch is NormalizeBatch's one pass; false sends the body to the
// reference path.
func (n *Normalizer) fastBatch(b *NormalizedBatch, body []byte, now time.Time, lim Limits) bool {
	if len(body) > maxScan {
		return false
	}
	n.s = scanner{b: body}
	if !n.s.batch(&n.bs) {
		return false
	}
	if lim.MaxBatchEvents > 0 && len(n.bs.items) > lim.MaxBatchEvents {
		return false
	}
	b.reset()
	var d Defaults
	if sp := n.bs.f[bWriteKey]; sp.end != 0 {
		switch body[sp.start] {
		case 'n':
		case '"':
			k := body[sp.start+1 : sp.end-1]
			if strings.IndexByte(unsafeString(k), '\\') >= 0 {
				return false
			}
			b.WriteKey = string(k)
		default:
			return false
		}
	}
	// A batch-level context or integrations is merged under each item's;
	// its members are listed once, and Decode's path for an odd item
	// gets them as a map.
	for k, f := range [...]int{bContext, bIntegrations} {
		n.merge[k].active = false
		sp := n.bs.f[f]
		if sp.end == 0 || body[sp.start] == 'n' || isEmptyObject(body[sp.start:sp.end]) {
			continue
		}
		if body[sp.start] != '{' || !n.merge[k].load(body, sp) {
			return false
		}
		var m map[string]any
		if err := json.Unmarshal(body[sp.start:sp.end], &m); err != nil {
			return false
		}
		if k == 0 {
			d.Context = m
		} else {
			d.Integrations = m
		}
	}
	if sp := n.bs.f[bSentAt]; sp.end != 0 {
		t, err := timeField("sentAt", body[sp.start:sp.end])
		if err != nil {
			return false
		}
		d.SentAt = t
	}
	n.spans = n.spans[:0]
	for i := range n.bs.items {
		it := &n.bs.items[i]
		n.add(b, body[it.raw.start:it.raw.end], now, lim, d, func(dst []byte) ([]byte, Type, span, error) {
			if it.slow {
				return dst, "", span{}, errSlow
			}
			return n.build(dst, body, it, now, d)
		})
	}
	n.finish(b)
	return true
}

// add normalises one item into b: with fast when it is given and does not
// answer errSlow, else with Decode.
func (n *Normalizer) add(b *NormalizedBatch, raw []byte, now time.Time, lim Limits, d Defaults, fast func([]byte) ([]byte, Type, span, error)) {
	start := len(b.buf)
	item := BatchItem{Raw: raw}
	var err error
	if lim.MaxEventBytes > 0 && len(raw) > lim.MaxEventBytes {
		err = fieldErr("", "event is %d bytes, over the %d byte limit", len(raw), lim.MaxEventBytes)
	} else {
		err = errSlow
		if fast != nil {
			var key span
			var out []byte
			out, item.Type, key, err = fast(b.buf)
			if err == nil {
				b.buf = out
				n.spans = append(n.spans, recordSpan{start, len(out), int(key.start), int(key.end)})
			}
		}
		if err == errSlow {
			var info Normalized
			var out []byte
			if out, info, err = slowNormalize(b.buf, raw, now, lim, d); err == nil {
				end := len(out)
				b.buf = append(out, info.EntityID...)
				item.Type = info.Type
				n.spans = append(n.spans, recordSpan{start, end, end, len(b.buf)})
			}
		}
	}
	if err != nil {
		item.Err = err
		n.spans = append(n.spans, recordSpan{})
	}
	b.Items = append(b.Items, item)
}

// finish slices the records out of the buffer once it stopped growing.
func (n *Normalizer) finish(b *NormalizedBatch) {
	for i, sp := range n.spans {
		if b.Items[i].Err == nil {
			b.Items[i].Value = b.buf[sp.v0:sp.v1:sp.v1]
			b.Items[i].Key = b.buf[sp.k0:sp.k1:sp.k1]
		}
	}
}

// build writes the record of an item the scanner found in b. It returns
// the type and where the entity id (the record's key) lies in the result;
// errSlow when Decode must read the item.
func (n *Normalizer) build(dst, b []byte, it *itemScan, now time.Time, d Defaults) ([]byte, Type, span, error) {
	kind := func(f field) byte {
		if it.f[f].end == 0 {
			return 'n'
		}
		return b[it.f[f].start]
	}
	inner := func(f field) []byte { return b[it.f[f].start+1 : it.f[f].end-1] }
	if kind(fCategory) == '"' {
		return dst, "", span{}, errSlow // a page category moves into properties
	}
	t := d.Type
	if t == "" {
		f := fType
		if kind(fType) == 'n' {
			f = fAction
		}
		switch kind(f) {
		case 'n':
			return dst, "", span{}, fieldErr("type", "required (track, identify, page, screen, group or alias)")
		case '"':
		default:
			return dst, "", span{}, fieldErr("type", "must be a string")
		}
		s := inner(f)
		if t = typeOf(s); t == "" {
			return dst, "", span{}, fieldErr("type", "unknown type %q (want track, identify, page, screen, group or alias)", string(s))
		}
	}
	// The string fields, as Decode reads them: null is absent, a number is
	// allowed for ids.
	var vals [numFields][]byte
	for _, sf := range [...]struct {
		f        field
		numberOK bool
	}{{fMessageID, false}, {fUserID, true}, {fAnonymousID, true}, {fPreviousID, true}, {fGroupID, true}, {fEvent, false}, {fName, false}, {fFeatureSet, false}} {
		switch c := kind(sf.f); {
		case c == 'n':
		case c == '"':
			vals[sf.f] = inner(sf.f)
		case sf.numberOK && (c == '-' || isDigit(c)):
			// An integer is the id as sent (see NumberID); the scanner
			// sent numbers with an exponent to Decode.
			sp := it.f[sf.f]
			if text := b[sp.start:sp.end]; isIntegerText(text) {
				vals[sf.f] = text
			} else {
				x, _ := strconv.ParseFloat(unsafeString(text), 64)
				n.nums[sf.f] = strconv.AppendFloat(n.nums[sf.f][:0], x, 'f', -1, 64)
				vals[sf.f] = n.nums[sf.f]
			}
		case sf.numberOK:
			return dst, "", span{}, fieldErr(fieldNames[sf.f], "must be a string or a number")
		default:
			return dst, "", span{}, fieldErr(fieldNames[sf.f], "must be a string")
		}
		if sf.f == fMessageID && len(vals[fMessageID]) > MaxMessageIDLen {
			return dst, "", span{}, fieldErr("messageId", "is %d characters, over the %d limit", len(vals[fMessageID]), MaxMessageIDLen)
		}
		if sf.numberOK && len(vals[sf.f]) > MaxIDLen {
			return dst, "", span{}, checkIDLen(fieldNames[sf.f], len(vals[sf.f]))
		}
	}
	for f := fProperties; f <= fIntegrations; f++ {
		if c := kind(f); c != 'n' && c != '{' {
			return dst, "", span{}, fieldErr(fieldNames[f], "must be an object")
		}
	}
	if kind(fCategory) != 'n' {
		return dst, "", span{}, fieldErr("category", "must be a string")
	}
	if err := checkIDs(t, len(vals[fUserID]) > 0, len(vals[fAnonymousID]) > 0, len(vals[fEvent]) > 0, len(vals[fPreviousID]) > 0, len(vals[fGroupID]) > 0); err != nil {
		return dst, "", span{}, err
	}
	var times [3]time.Time
	for i, f := range [...]field{fTimestamp, fOriginalTimestamp, fSentAt} {
		if it.f[f].end == 0 {
			continue
		}
		tm, err := timeField(fieldNames[f], b[it.f[f].start:it.f[f].end])
		if err != nil {
			return dst, "", span{}, err
		}
		times[i] = tm
	}
	received := now.UTC()
	// A batch's items mostly send the same times (none, or the batch's
	// sentAt): the last answer is kept.
	in := [5]time.Time{received, times[0], times[1], times[2], d.SentAt}
	if !n.times.ok || in != n.times.in {
		ts, orig, sent, err := eventTimes(received, times[0], times[1], times[2], d.SentAt)
		if err != nil {
			return dst, "", span{}, err
		}
		n.times = timesMemo{in: in, ts: ts, orig: orig, sent: sent, ok: true}
	}
	ts, orig, sent := n.times.ts, n.times.orig, n.times.sent

	// The same fields, in the same order, as Event's JSON. Strings are
	// copied as sent: the scanner let through only strings with no escapes,
	// which are valid JSON as they are.
	var key span
	str := func(dst []byte, name string, v []byte, f field) []byte {
		if len(v) == 0 {
			return dst
		}
		dst = append(dst, name...)
		dst = append(dst, '"')
		if f == fUserID || f == fAnonymousID && key.end == 0 {
			key = span{int32(len(dst)), int32(len(dst) + len(v))}
		}
		dst = append(dst, v...)
		return append(dst, '"')
	}
	dst = append(dst, `{"type":"`...)
	dst = append(dst, t...)
	dst = append(dst, `","messageId":"`...)
	if len(vals[fMessageID]) > 0 {
		dst = append(dst, vals[fMessageID]...)
	} else {
		dst = uuidtext.Append(dst, uuid.New())
	}
	dst = append(dst, '"')
	dst = str(dst, `,"userId":`, vals[fUserID], fUserID)
	dst = str(dst, `,"anonymousId":`, vals[fAnonymousID], fAnonymousID)
	dst = str(dst, `,"previousId":`, vals[fPreviousID], fPreviousID)
	dst = str(dst, `,"groupId":`, vals[fGroupID], fGroupID)
	dst = str(dst, `,"event":`, vals[fEvent], fEvent)
	dst = str(dst, `,"name":`, vals[fName], fName)
	for f := fProperties; f <= fIntegrations; f++ {
		if f >= fContext && n.merge[f-fContext].active {
			var ok bool
			if dst, ok = n.appendMerged(dst, b, it, f, &n.merge[f-fContext]); !ok {
				return dst, "", span{}, errSlow
			}
			continue
		}
		if kind(f) == 'n' {
			continue
		}
		obj := b[it.f[f].start:it.f[f].end]
		if isEmptyObject(obj) {
			continue
		}
		dst = append(dst, ',', '"')
		dst = append(dst, fieldNames[f]...)
		dst = append(dst, '"', ':')
		if it.ws {
			dst = appendCompact(dst, obj)
		} else {
			dst = append(dst, obj...)
		}
	}
	if !ts.Equal(n.tsAt) || n.tsText == nil {
		n.tsAt, n.tsText = ts, appendTime(n.tsText[:0], `,"timestamp":`, ts)
	}
	dst = append(dst, n.tsText...)
	if !orig.IsZero() {
		dst = appendTime(dst, `,"originalTimestamp":`, orig)
	}
	if !sent.IsZero() {
		dst = appendTime(dst, `,"sentAt":`, sent)
	}
	if !received.Equal(n.recvAt) || n.recvText == nil {
		n.recvAt, n.recvText = received, appendTime(n.recvText[:0], `,"receivedAt":`, received)
	}
	dst = append(dst, n.recvText...)
	dst = str(dst, `,"featureSet":`, vals[fFeatureSet], fFeatureSet)
	dst = append(dst, '}')
	return dst, t, key, nil
}

var fieldNames = [numFields]string{"type", "action", "messageId", "userId", "anonymousId", "previousId", "groupId",
	"event", "name", "category", "properties", "traits", "context", "integrations", "timestamp",
	"originalTimestamp", "sentAt", "featureSet"}

// knownFields maps each event field Decode reads, lowercased, to its
// spelling.
var knownFields = func() map[string]string {
	m := map[string]string{}
	for _, f := range fieldNames {
		m[strings.ToLower(f)] = f
	}
	return m
}()

func typeOf(s []byte) Type {
	switch string(s) {
	case "track":
		return Track
	case "identify":
		return Identify
	case "page":
		return Page
	case "screen":
		return Screen
	case "group":
		return Group
	case "alias":
		return Alias
	}
	return ""
}

// timeField reads a time the scanner let through: null, a string without
// escapes, or a number without an exponent; as Decode reads it.
func timeField(field string, v []byte) (time.Time, error) {
	switch c := v[0]; {
	case c == 'n':
		return time.Time{}, nil
	case c == '"':
		s := unsafeString(v[1 : len(v)-1])
		if strings.IndexByte(s, '\\') >= 0 {
			return time.Time{}, errSlow
		}
		if s == "" {
			return time.Time{}, nil
		}
		t, err := ParseTime(s)
		if err != nil {
			return time.Time{}, fieldErr(field, "%q is not an ISO-8601 date", s)
		}
		return t, nil
	case c == '-' || isDigit(c):
		x, err := strconv.ParseFloat(unsafeString(v), 64)
		if err != nil {
			return time.Time{}, errSlow
		}
		return time.UnixMilli(int64(x)).UTC(), nil
	}
	return time.Time{}, fieldErr(field, "must be an ISO-8601 string")
}

// isEmptyObject reports whether obj (an object the scanner passed) has no
// members.
func isEmptyObject(obj []byte) bool {
	if obj[0] != '{' {
		return false
	}
	for _, c := range obj[1 : len(obj)-1] {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

// appendCompact appends valid JSON without the whitespace between tokens.
func appendCompact(dst, src []byte) []byte {
	in := false
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case in:
			if c == '\\' {
				dst = append(dst, c)
				i++
				c = src[i]
			} else if c == '"' {
				in = false
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		case c == '"':
			in = true
		}
		dst = append(dst, c)
	}
	return dst
}

// unsafeString views b as a string for reading within this call.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

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

func appendTime(dst []byte, key string, t time.Time) []byte {
	dst = append(dst, key...)
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}
