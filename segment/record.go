package segment

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// Record is one enter or exit as written to the pulse.segments topic (JSON,
// keyed by entity id) and streamed over the scorer's SSE endpoint.
type Record struct {
	// ID identifies the change, not the delivery: replaying the input that
	// caused it gives the same ID, so consumers dedupe on it. See NewRecord.
	ID       string `json:"change_id"`
	Segment  string `json:"segment"`
	Entity   string `json:"entity"` // entity type, e.g. user
	EntityID string `json:"id"`
	Change   string `json:"change"` // ChangeEnter or ChangeExit
	// At is when the change happened in event time: the timestamp of the
	// event, or the timer's time, that caused it. UTC.
	At time.Time `json:"at"`
	// Features optionally carries the entity's features at the change.
	Features map[string]any `json:"features,omitempty"`
}

// NewRecord makes the record of change c for one entity.
//
// cause names what made the entity's vector change, and must be the same
// when the stream replays the same input: the input position
// ("pulse.events/3/1234567": topic/partition/offset) for an event, the
// timer's due time for a window expiry ("timer/1717171717000"), the rule
// fingerprint for a re-evaluation after reload ("reload/<fingerprint>").
// The change_id is a hash of (segment, entity, id, change, cause), so a
// real change keeps its id across replays and retries, and two different
// changes never share one.
func NewRecord(c Change, entity, id string, at time.Time, cause string, features map[string]any) Record {
	return Record{
		ID:       changeID(c.Segment, entity, id, c.Type(), cause),
		Segment:  c.Segment,
		Entity:   entity,
		EntityID: id,
		Change:   c.Type(),
		At:       at.UTC(),
		Features: features,
	}
}

// changeID is 128 bits of SHA-256 over the length-prefixed parts, in hex.
func changeID(parts ...string) string {
	h := sha256.New()
	h.Write([]byte("pulse.segments/v1"))
	var n [binary.MaxVarintLen64]byte
	for _, p := range parts {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		h.Write([]byte(p))
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}
