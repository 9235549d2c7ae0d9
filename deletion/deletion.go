// Package deletion is the progress of deletions on request (a person
// deleted by DELETE /v1/profiles or `pulse delete`: the GDPR's erasure, the
// CCPA's deletion), for the status API and the audit of deletions.
//
// Each part of Pulse that carries out a share of a deletion writes a Record
// to the deletions topic (pulse.deletions, compacted) in the same step as
// the share itself: the scorer (or the command) when it writes the request,
// the identity linker in the transaction that drops the person, each
// entity's stream task in the transaction that deletes the entity, and the
// history writer once ClickHouse took the deletion of an identifier's rows.
// A Table folds the records into each request's Status.
//
// The records name no person: a request id, counts, times and the kind of
// identifier asked for, so the topic is an audit of deletions that may be
// kept as long as one is needed. The key is the request id and the
// record's part (Key), so compaction keeps one record per part and no
// later record hides an earlier stage.
//
// Pure: no I/O.
package deletion

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	json "github.com/goccy/go-json"
)

// Stage is the part of Pulse a Record comes from.
type Stage string

// The stages of a deletion, in the order they run.
const (
	// Requested: the request is written (scorer or `pulse delete`).
	Requested Stage = "requested"
	// Identity: the linker dropped the person from the identity graph,
	// tombstoned its identifiers and sent a forget to each entity's task.
	Identity Stage = "identity"
	// Stream: one entity's task deleted its state, memberships (each exit
	// sent once) and vector (Index: the entity's number, 0 to Entities-1).
	Stream Stage = "stream"
	// History: a history writer issued the deletion of one identifier's
	// rows in ClickHouse (Index: the identifier's number, 0 to
	// Identifiers-1).
	History Stage = "history"
)

// Header names the Kafka record header that carries a Part (as
// Part.String) on what a deletion's next stage reads: the tombstones on
// the identity topic, read by the history writer.
const Header = "pulse.deletion"

// Record is one stage's share of one deletion, done.
type Record struct {
	Request string    `json:"request_id"`
	Stage   Stage     `json:"stage"`
	At      time.Time `json:"at"`
	// Index numbers the entity (Stream) or the identifier (History).
	Index int `json:"index,omitempty"`

	// Of the request (Requested, Identity): when it was asked, the kind
	// of identifier it named (user_id, anonymous_id, email...), and
	// whether it suppressed the person's later events.
	RequestedAt time.Time `json:"requested_at,omitzero"`
	Kind        string    `json:"kind,omitempty"`
	Suppress    bool      `json:"suppress,omitempty"`

	// Identity: how many identifiers and entities the person had.
	Identifiers int `json:"identifiers,omitempty"`
	Entities    int `json:"entities,omitempty"`
}

// Key is r's key on the deletions topic: request/stage, and /index for
// Stream and History.
func (r Record) Key() []byte {
	k := r.Request + "/" + string(r.Stage)
	if r.Stage == Stream || r.Stage == History {
		k += "/" + strconv.Itoa(r.Index)
	}
	return []byte(k)
}

// Encode is r's value on the deletions topic.
func (r Record) Encode() []byte {
	b, err := json.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("deletion: cannot encode a record: %v", err)) // strings, ints and times
	}
	return b
}

// Decode reads a deletions topic value.
func Decode(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("cannot decode deletion record: %w", err)
	}
	if r.Request == "" {
		return Record{}, errors.New("cannot decode deletion record: no request_id")
	}
	switch r.Stage {
	case Requested, Identity, Stream, History:
	default:
		return Record{}, fmt.Errorf("cannot decode deletion record: unknown stage %q", r.Stage)
	}
	if r.Index < 0 {
		return Record{}, fmt.Errorf("cannot decode deletion record: index %d", r.Index)
	}
	return r, nil
}

// Part names one entity's or identifier's share of a request, carried from
// one stage to the next (a resolved forget record's fields, the Header on
// a tombstone).
type Part struct {
	Request string
	Index   int
}

// String is "request/index", the Header's value.
func (p Part) String() string { return p.Request + "/" + strconv.Itoa(p.Index) }

// ParsePart reads a Header's value.
func ParsePart(s string) (Part, error) {
	i := strings.LastIndexByte(s, '/')
	if i <= 0 {
		return Part{}, fmt.Errorf("deletion part %q: want request/index", s)
	}
	n, err := strconv.Atoi(s[i+1:])
	if err != nil || n < 0 {
		return Part{}, fmt.Errorf("deletion part %q: want request/index", s)
	}
	return Part{Request: s[:i], Index: n}, nil
}
