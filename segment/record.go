package segment

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	json "github.com/goccy/go-json"
)

// Record is one enter or exit as written to the pulse.segments topic (JSON,
// keyed by entity id) and streamed over the scorer's SSE endpoint. It is
// the topic's one record type: the stream writes it with Encode; the
// scorer, webhooks and history read it with DecodeRecord or DecodeRecordRaw.
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
	// Reason is set on the exits of an entity deleted on request
	// (ReasonDeleted): destinations carry them as any exit, and the
	// history keeps none of them.
	Reason string `json:"reason,omitempty"`
	// Features optionally carries the entity's features at the change.
	Features map[string]any `json:"features,omitempty"`
}

// ReasonDeleted is Record.Reason of the exits of a person deleted on
// request (the profile API's DELETE).
const ReasonDeleted = "deleted"

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
	// Built on the stack: the stream makes one per segment change.
	var buf [256]byte
	b := append(buf[:0], "pulse.segments/v1"...)
	for _, p := range parts {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// Encode is the record value. It fails only when a feature value has no
// JSON form.
func (r *Record) Encode() ([]byte, error) {
	sc := recordPool.Get().(*recordScratch)
	defer recordPool.Put(sc)
	if b, ok := appendRecord(sc, sc.buf[:0], r); ok {
		sc.buf = b
		return slices.Clone(b), nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("cannot encode segment record: %w", err)
	}
	return b, nil
}

// DecodeRecord reads a record value written by Encode, features included.
// It checks the JSON and the field types only: which fields a reader needs
// is the reader's to say.
func DecodeRecord(b []byte) (Record, error) {
	r, raw, err := DecodeRecordRaw(b)
	if err != nil {
		return Record{}, err
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.Features); err != nil {
			return Record{}, fmt.Errorf("cannot decode segment record: features: %w", err)
		}
	}
	return r, nil
}

// wireRecord is Record with its features left raw (the outer field hides
// the embedded one).
type wireRecord struct {
	Record
	Features json.RawMessage `json:"features"`
}

// DecodeRecordRaw reads a record value as DecodeRecord does but leaves the
// features as their raw JSON (nil when absent) and Record.Features nil:
// readers that store them as they are (history) or do not look at them
// (the live feed, webhooks) skip building the map.
func DecodeRecordRaw(b []byte) (Record, []byte, error) {
	var w wireRecord
	if err := json.Unmarshal(b, &w); err != nil {
		return Record{}, nil, fmt.Errorf("cannot decode segment record: %w", err)
	}
	return w.Record, w.Features, nil
}
