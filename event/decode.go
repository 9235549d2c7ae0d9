package event

import (
	"errors"
	"fmt"
	json "github.com/goccy/go-json"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// Limits bound what a client may send. The defaults are Segment's.
type Limits struct {
	MaxEventBytes  int // one event's JSON; default 32 KiB
	MaxBatchEvents int // items in one batch; default 2500
}

// DefaultLimits are Segment's limits.
var DefaultLimits = Limits{MaxEventBytes: 32 << 10, MaxBatchEvents: 2500}

// MaxMessageIDLen bounds a client-supplied messageId.
const MaxMessageIDLen = 100

// FieldError says which field of an event is wrong and why. Its text is
// "field: reason", e.g. "event: required for track".
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// FieldReason is the field's path and the reason apart, for an answer
// that gives them to a program as well (httpapi.FieldProblem).
func (e *FieldError) FieldReason() (field, reason string) { return e.Field, e.Reason }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Defaults are values a batch gives every item: the batch-level context,
// integrations and sentAt, and the type when the endpoint implies it.
type Defaults struct {
	Type         Type
	Context      map[string]any
	Integrations map[string]any
	SentAt       time.Time
}

// wire is an event as clients send it. Fields are decoded loosely so that
// a wrong type becomes an error naming the field, not a generic JSON error.
type wire struct {
	Type      any `json:"type"`
	Action    any `json:"action"` // old Segment name for type
	MessageID any `json:"messageId"`
	// Ids are read from their JSON text: a number's digits are the id.
	UserID            json.RawMessage `json:"userId"`
	AnonymousID       json.RawMessage `json:"anonymousId"`
	PreviousID        json.RawMessage `json:"previousId"`
	GroupID           json.RawMessage `json:"groupId"`
	Event             any             `json:"event"`
	Name              any             `json:"name"`
	Category          any             `json:"category"`
	Properties        any             `json:"properties"`
	Traits            any             `json:"traits"`
	Context           any             `json:"context"`
	Integrations      any             `json:"integrations"`
	Timestamp         any             `json:"timestamp"`
	OriginalTimestamp any             `json:"originalTimestamp"`
	SentAt            any             `json:"sentAt"`
	FeatureSet        any             `json:"featureSet"`
}

// Decode validates and normalises one event. raw is the event's JSON, now is
// the server's receive time (stamped as receivedAt). The returned error is a
// *FieldError for anything the client got wrong.
func Decode(raw []byte, now time.Time, lim Limits, d Defaults) (*Event, error) {
	if lim.MaxEventBytes > 0 && len(raw) > lim.MaxEventBytes {
		return nil, fieldErr("", "event is %d bytes, over the %d byte limit", len(raw), lim.MaxEventBytes)
	}
	var w wire
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fieldErr("", "invalid JSON: %s", jsonReason(err))
	}
	if path, bad := badTextField(raw, ""); bad {
		return nil, fieldErr(path, textReason)
	}
	return normalise(&w, now, d)
}

func normalise(w *wire, now time.Time, d Defaults) (*Event, error) {
	e := &Event{ReceivedAt: now.UTC()}
	var err error

	t := d.Type
	if t == "" {
		raw := w.Type
		if raw == nil {
			raw = w.Action
		}
		if raw == nil {
			return nil, fieldErr("type", "required (track, identify, page, screen, group or alias)")
		}
		s, ok := raw.(string)
		if !ok {
			return nil, fieldErr("type", "must be a string")
		}
		t = Type(s)
		if !t.Valid() {
			return nil, fieldErr("type", "unknown type %q (want track, identify, page, screen, group or alias)", s)
		}
	}
	e.Type = t

	if e.MessageID, err = optString("messageId", w.MessageID, false); err != nil {
		return nil, err
	}
	if len(e.MessageID) > MaxMessageIDLen {
		return nil, fieldErr("messageId", "is %d characters, over the %d limit", len(e.MessageID), MaxMessageIDLen)
	}
	if e.MessageID == "" {
		e.MessageID = uuid.NewString()
	}
	if e.UserID, err = optID("userId", w.UserID); err != nil {
		return nil, err
	}
	if e.AnonymousID, err = optID("anonymousId", w.AnonymousID); err != nil {
		return nil, err
	}
	if e.PreviousID, err = optID("previousId", w.PreviousID); err != nil {
		return nil, err
	}
	if e.GroupID, err = optID("groupId", w.GroupID); err != nil {
		return nil, err
	}
	if e.Event, err = optString("event", w.Event, false); err != nil {
		return nil, err
	}
	if e.Name, err = optString("name", w.Name, false); err != nil {
		return nil, err
	}
	if e.FeatureSet, err = optString("featureSet", w.FeatureSet, false); err != nil {
		return nil, err
	}
	if e.Properties, err = optObject("properties", w.Properties); err != nil {
		return nil, err
	}
	if e.Traits, err = optObject("traits", w.Traits); err != nil {
		return nil, err
	}
	if e.Context, err = optObject("context", w.Context); err != nil {
		return nil, err
	}
	if e.Integrations, err = optObject("integrations", w.Integrations); err != nil {
		return nil, err
	}
	if cat, err := optString("category", w.Category, false); err != nil {
		return nil, err
	} else if cat != "" && (e.Type == Page || e.Type == Screen) {
		if e.Properties == nil {
			e.Properties = map[string]any{}
		}
		if _, ok := e.Properties["category"]; !ok {
			e.Properties["category"] = cat
		}
	}
	e.Context = merge(d.Context, e.Context)
	e.Integrations = merge(d.Integrations, e.Integrations)

	if err := e.checkIDs(); err != nil {
		return nil, err
	}

	ts, err := optTime("timestamp", w.Timestamp)
	if err != nil {
		return nil, err
	}
	orig, err := optTime("originalTimestamp", w.OriginalTimestamp)
	if err != nil {
		return nil, err
	}
	sent, err := optTime("sentAt", w.SentAt)
	if err != nil {
		return nil, err
	}
	if err := e.setTimes(ts, orig, sent, d.SentAt); err != nil {
		return nil, err
	}
	return e, nil
}

// checkIDs applies the per-type rules on ids and names.
func (e *Event) checkIDs() error {
	return checkIDs(e.Type, e.UserID != "", e.AnonymousID != "", e.Event != "", e.PreviousID != "", e.GroupID != "")
}

func checkIDs(t Type, user, anon, event, prev, group bool) error {
	switch {
	case !user && !anon:
		return fieldErr("userId", "userId or anonymousId is required")
	case t == Track && !event:
		return fieldErr("event", "required for track")
	case t == Alias && !prev:
		return fieldErr("previousId", "required for alias")
	case t == Alias && !user:
		return fieldErr("userId", "required for alias")
	case t == Group && !group:
		return fieldErr("groupId", "required for group")
	}
	return nil
}

// setTimes sets Timestamp from what the client sent, with Segment's
// clock-skew correction, and checks it is plausible. e.ReceivedAt is set.
func (e *Event) setTimes(ts, orig, sent, batchSent time.Time) error {
	var err error
	e.Timestamp, e.OriginalTimestamp, e.SentAt, err = eventTimes(e.ReceivedAt, ts, orig, sent, batchSent)
	return err
}

// eventTimes returns an event's timestamp, originalTimestamp and sentAt
// from what the client sent and the receive time.
func eventTimes(received, ts, orig, sent, batchSent time.Time) (timestamp, original, sentAt time.Time, err error) {
	if sent.IsZero() {
		sent = batchSent
	}
	original = orig
	switch {
	case !ts.IsZero():
		// An explicit timestamp is the client's word: historical imports
		// and server-side libraries set it on purpose.
		timestamp = ts
		if orig.IsZero() {
			original = ts
		}
	case !orig.IsZero() && !sent.IsZero():
		// Clock-skew correction, as Segment does it.
		timestamp = received.Add(-sent.Sub(orig))
	case !orig.IsZero():
		timestamp = orig
	default:
		timestamp = received
	}
	timestamp = timestamp.UTC().Truncate(time.Millisecond)
	if y := timestamp.Year(); y < 2000 || timestamp.After(received.Add(MaxFuture)) {
		return timestamp, original, sent, fieldErr("timestamp", "%s is out of range (after 2000 and at most %s ahead of the server)", timestamp.Format(time.RFC3339), MaxFuture)
	}
	return timestamp, original, sent, nil
}

// MaxFuture is how far ahead of the server an event's time may be.
const MaxFuture = 24 * time.Hour

func merge(base, over map[string]any) map[string]any {
	if len(base) == 0 {
		return over
	}
	if len(over) == 0 {
		out := make(map[string]any, len(base))
		for k, v := range base {
			out[k] = v
		}
		return out
	}
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

func optString(field string, v any, numberOK bool) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case float64:
		if numberOK {
			return strconv.FormatFloat(x, 'f', -1, 64), nil
		}
	}
	if numberOK {
		return "", fieldErr(field, "must be a string or a number")
	}
	return "", fieldErr(field, "must be a string")
}

// optID reads an id: a string, a number (its decimal text, see NumberID)
// or null, at most MaxIDLen bytes.
func optID(field string, raw json.RawMessage) (string, error) {
	if len(raw) == 0 {
		return "", nil
	}
	var id string
	switch c := raw[0]; {
	case c == 'n' && string(raw) == "null":
		return "", nil
	case c == '"':
		if err := json.Unmarshal(raw, &id); err != nil {
			return "", fieldErr(field, "must be a string or a number")
		}
	case c == '-' || isDigit(c):
		var ok bool
		if id, ok = NumberID(raw); !ok {
			return "", fieldErr(field, "number %s is out of range: send the id as a string", raw)
		}
	default:
		return "", fieldErr(field, "must be a string or a number")
	}
	return id, checkIDLen(field, len(id))
}

// checkIDLen refuses an id over MaxIDLen bytes.
func checkIDLen(field string, n int) error {
	if n > MaxIDLen {
		return fieldErr(field, "is %d bytes, over the %d byte limit", n, MaxIDLen)
	}
	return nil
}

func optObject(field string, v any) (map[string]any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return x, nil
	}
	return nil, fieldErr(field, "must be an object")
}

func optTime(field string, v any) (time.Time, error) {
	switch x := v.(type) {
	case nil:
		return time.Time{}, nil
	case string:
		if x == "" {
			return time.Time{}, nil
		}
		t, err := ParseTime(x)
		if err != nil {
			return time.Time{}, fieldErr(field, "%q is not an ISO-8601 date", x)
		}
		return t, nil
	case float64:
		// Epoch milliseconds, as some importers send.
		return time.UnixMilli(int64(x)).UTC(), nil
	}
	return time.Time{}, fieldErr(field, "must be an ISO-8601 string")
}

// timeLayouts are the ISO-8601 forms Segment libraries send.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
}

// ParseTime reads an ISO-8601 time; a time with no zone is UTC.
func ParseTime(s string) (time.Time, error) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid time %q", s)
}

func jsonReason(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("%s must not be a %s", te.Field, te.Value)
		}
		return fmt.Sprintf("expected an object, got a %s", te.Value)
	}
	return err.Error()
}

// Batch is a decoded /v1/batch body: each item's raw JSON and the
// batch-level defaults. Items are decoded one by one so one bad item does
// not reject its neighbours.
type Batch struct {
	WriteKey string
	Items    []json.RawMessage
	Defaults Defaults
}

type wireBatch struct {
	Batch        *[]json.RawMessage `json:"batch"`
	Context      any                `json:"context"`
	Integrations any                `json:"integrations"`
	WriteKey     any                `json:"writeKey"`
	SentAt       any                `json:"sentAt"`
}

// DecodeBatch reads a batch body. Errors are about the whole request.
func DecodeBatch(body []byte, lim Limits) (*Batch, error) {
	var w wireBatch
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fieldErr("", "invalid JSON: %s", jsonReason(err))
	}
	if w.Batch == nil {
		return nil, fieldErr("batch", "required: a list of events")
	}
	// The items are checked one by one, as events.
	if path, bad := badTextField(body, "batch"); bad {
		return nil, fieldErr(path, textReason)
	}
	b := &Batch{Items: *w.Batch}
	if lim.MaxBatchEvents > 0 && len(b.Items) > lim.MaxBatchEvents {
		return nil, &LimitError{fieldErr("batch", "has %d events, over the %d event limit", len(b.Items), lim.MaxBatchEvents)}
	}
	var err error
	if b.WriteKey, err = optString("writeKey", w.WriteKey, false); err != nil {
		return nil, err
	}
	if b.Defaults.Context, err = optObject("context", w.Context); err != nil {
		return nil, err
	}
	if b.Defaults.Integrations, err = optObject("integrations", w.Integrations); err != nil {
		return nil, err
	}
	if b.Defaults.SentAt, err = optTime("sentAt", w.SentAt); err != nil {
		return nil, err
	}
	return b, nil
}

// LimitError marks a request over a size limit (HTTP 413).
type LimitError struct{ *FieldError }

func (e *LimitError) Unwrap() error { return e.FieldError }

// WriteKeyOf returns the writeKey field of a single-event body, if any,
// without parsing the rest of it (see BodyString).
func WriteKeyOf(body []byte) string {
	k, _ := BodyString(body, "writeKey")
	return k
}

// Marshal encodes the normalised event: the value of a pulse.events record.
func (e *Event) Marshal() ([]byte, error) { return json.Marshal(e) }

// Unmarshal reads a normalised event (a pulse.events record value). Records
// that apps produce themselves must carry type, an id and, for track, the
// event name; a missing messageId is left empty for the caller to derive
// (the stream uses the record's partition and offset).
func Unmarshal(b []byte) (*Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("cannot decode event: %w", err)
	}
	if err := e.checkRecord(); err != nil {
		return nil, err
	}
	return &e, nil
}

// checkRecord is Unmarshal's check of a decoded record; it defaults the
// timestamp to receivedAt.
func (e *Event) checkRecord() error {
	return checkRecord(e.Type, e.UserID, e.AnonymousID, e.Event, &e.Timestamp, e.ReceivedAt)
}

// checkRecord holds the rules of a record on the events topic, for Event
// and Raw alike.
func checkRecord(t Type, userID, anonymousID, name string, ts *time.Time, receivedAt time.Time) error {
	if !t.Valid() {
		return fieldErr("type", "unknown type %q", t)
	}
	if userID == "" && anonymousID == "" {
		return fieldErr("userId", "userId or anonymousId is required")
	}
	if t == Track && name == "" {
		return fieldErr("event", "required for track")
	}
	if ts.IsZero() {
		*ts = receivedAt
	}
	if ts.IsZero() {
		return fieldErr("timestamp", "required in records on the events topic")
	}
	return nil
}
