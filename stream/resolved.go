package stream

import (
	"fmt"
	"time"

	json "github.com/goccy/go-json"
)

// resolved is the one record type of the stream's repartition topic
// (pulse.events.resolved), keyed by the entity whose task must act, which
// is the task of the same partition of pulse.events:
//
//   - move (from the linker, keyed From): entity From stops existing; its
//     task sends From's state to To and forwards From's later events.
//   - transfer (keyed To): From's whole state, to merge into To's.
//   - event (keyed To): an event of a moved entity, to count for To.
//   - forget (from the linker, keyed To): entity To is deleted, a person
//     deleted on request (identity.KindForget); no From.
//
// A task that finds To moved too forwards the record on (transitive
// links: A → U, then U → V, ends in V).
type resolved struct {
	Kind  string    `json:"kind"`
	From  string    `json:"from,omitempty"`
	To    string    `json:"to"`
	At    time.Time `json:"at,omitzero"`
	Cause string    `json:"cause,omitempty"` // the link's messageId; a forget's request id
	// Index numbers a forget among its request's entities (the
	// deletion.Stream record of its progress).
	Index int `json:"index,omitempty"`
	// State is From's encoded aggregate.State (transfer).
	State []byte `json:"state,omitempty"`
	// Event is the event's JSON as it came on pulse.events (event).
	Event json.RawMessage `json:"event,omitempty"`
}

// The kinds of resolved records.
const (
	resolvedMove     = "move"
	resolvedTransfer = "transfer"
	resolvedEvent    = "event"
	resolvedForget   = "forget"
)

func encodeResolved(r resolved) []byte {
	b, err := json.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("stream: cannot encode a resolved record: %v", err)) // only strings, bytes and a time
	}
	return b
}

func decodeResolved(b []byte) (resolved, error) {
	var r resolved
	if err := json.Unmarshal(b, &r); err != nil {
		return resolved{}, fmt.Errorf("cannot decode resolved record: %w", err)
	}
	switch r.Kind {
	case resolvedMove, resolvedTransfer, resolvedEvent, resolvedForget:
	default:
		return resolved{}, fmt.Errorf("cannot decode resolved record: unknown kind %q", r.Kind)
	}
	if r.To == "" || (r.Kind != resolvedEvent && r.Kind != resolvedForget && r.From == "") {
		return resolved{}, fmt.Errorf("cannot decode resolved record: %s without from or to", r.Kind)
	}
	return r, nil
}
