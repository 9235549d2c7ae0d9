package event

import (
	"errors"
	"fmt"
	"time"

	json "github.com/goccy/go-json"
)

// The reasons a dead letter gives for refusing an event.
const (
	// ReasonInvalid: the event failed validation (ingest, or the stream
	// reading a record an app produced straight to the events topic).
	ReasonInvalid = "invalid"
	// ReasonLate: the event arrived after every window it could count in
	// had closed (the stream's lateness bound).
	ReasonLate = "late"
	// ReasonUnreadable: a consumer could not decode a record of a topic it
	// reads (history keeps it rather than lose it without trace).
	ReasonUnreadable = "unreadable"
	// ReasonLinkRefused: an identity link the event asked for was refused
	// by a guard (identity.Reason*: blocked, cap_anonymous,
	// cap_identifiers, known_users_conflict, named in Field). The event
	// itself still counted, for its own profile.
	ReasonLinkRefused = "link_refused"
)

// DeadLetter is the one record type of the invalid-events topic
// (pulse.events.invalid): an event Pulse refused, with why, who refused it
// and, where it came from a topic, the input position. Ingest, the stream
// and history write it; history reads it into the invalid_events table.
// Encode and DecodeDeadLetter are its codec; every producer and consumer
// goes through them.
type DeadLetter struct {
	Error  string `json:"error"`
	Field  string `json:"field,omitempty"`  // the field at fault, when one is
	Reason string `json:"reason,omitempty"` // ReasonInvalid, ReasonLate, ReasonUnreadable or ReasonLinkRefused
	// Source is the service that refused the event: ingest, stream or history.
	Source string `json:"source"`
	// Index is the event's position in its HTTP batch (ingest only).
	Index int `json:"index"`
	// KeyName names the API key the batch came with (ingest only).
	KeyName    string    `json:"keyName,omitempty"`
	ReceivedAt time.Time `json:"receivedAt"`
	MessageID  string    `json:"messageId,omitempty"`
	// Topic, Partition and Offset are the refused record's input position
	// (stream and history; empty for ingest, which refuses before Kafka).
	Topic     string `json:"topic,omitempty"`
	Partition int32  `json:"partition,omitempty"`
	Offset    int64  `json:"offset,omitempty"`
	// Event is the refused input: its JSON as received when it was valid
	// JSON, else the raw bytes as one JSON string.
	Event json.RawMessage `json:"event"`
}

// NewDeadLetter makes the dead letter of raw, refused by source for err.
// The field comes from err when it is a *FieldError; raw is kept as JSON
// when it is JSON, else as a JSON string.
func NewDeadLetter(source, reason string, raw []byte, err error, now time.Time) DeadLetter {
	d := DeadLetter{Error: err.Error(), Reason: reason, Source: source, ReceivedAt: now.UTC()}
	var fe *FieldError
	if errors.As(err, &fe) {
		d.Field = fe.Field
	}
	if json.Valid(raw) {
		d.Event = raw
	} else {
		d.Event, _ = json.Marshal(string(raw))
	}
	return d
}

// Encode is the record value.
func (d *DeadLetter) Encode() []byte {
	v, err := json.Marshal(d)
	if err != nil {
		// Every field is a plain value and Event is valid JSON by
		// construction (NewDeadLetter), so this cannot happen.
		panic(fmt.Sprintf("event: cannot encode dead letter: %v", err))
	}
	return v
}

// DecodeDeadLetter reads a record value written by Encode.
func DecodeDeadLetter(b []byte) (DeadLetter, error) {
	var d DeadLetter
	if err := json.Unmarshal(b, &d); err != nil {
		return DeadLetter{}, fmt.Errorf("cannot decode dead letter: %w", err)
	}
	return d, nil
}
