package destination

import (
	"fmt"
	"time"

	json "github.com/goccy/go-json"
)

// Dead-letter reasons (DeadLetter.Reason and the reason label of
// pulse_destination_dead_letters_total).
const (
	ReasonRejected    = "rejected"          // the receiver refused it (a 4xx other than 408/429, a rejected item)
	ReasonExhausted   = "retries_exhausted" // every retry failed
	ReasonUndecodable = "undecodable"       // not a segment.Record (a model.TraitScore on the traits topic): nothing to deliver
)

// DeadLetter is a change whose delivery failed for good, as written (JSON,
// keyed by entity id) to the destinations' dead-letter topic
// (kafka.DestinationsDeadTopic, pulse.destinations.dead) or, for the
// segments' own webhooks, to kafka.WebhooksDeadTopic. It is those topics'
// one record type: write it with Encode, read it with DecodeDeadLetter.
type DeadLetter struct {
	Destination string `json:"destination"`
	Type        string `json:"type"`   // webhook, segment, http or kafka
	Reason      string `json:"reason"` // ReasonRejected, ReasonExhausted or ReasonUndecodable
	Kind        string `json:"kind"`   // KindSegment or KindTrait
	Segment     string `json:"segment,omitempty"`
	Trait       string `json:"trait,omitempty"`
	ChangeID    string `json:"change_id,omitempty"`
	URL         string `json:"url,omitempty"` // the endpoint, or the kafka topic
	Error       string `json:"error"`
	Status      int    `json:"status,omitempty"` // the last HTTP status, 0 when none
	Attempts    int    `json:"attempts"`
	// First is when the first attempt was made, Dead when it was given up.
	First time.Time `json:"first_attempt_at"`
	Dead  time.Time `json:"dead_at"`
	// Topic, Partition and Offset are where the change was read.
	Topic     string          `json:"topic"`
	Partition int32           `json:"partition"`
	Offset    int64           `json:"offset"`
	Record    json.RawMessage `json:"record,omitempty"` // the segment or trait record, as on the topic
	// Value is the record's value when it is not JSON (base64 in the
	// JSON), and Record empty.
	Value []byte `json:"value,omitempty"`
}

// Encode is the record value.
func (d *DeadLetter) Encode() ([]byte, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("cannot encode dead letter: %w", err)
	}
	return b, nil
}

// DecodeDeadLetter reads a value written by Encode.
func DecodeDeadLetter(b []byte) (DeadLetter, error) {
	var d DeadLetter
	if err := json.Unmarshal(b, &d); err != nil {
		return DeadLetter{}, fmt.Errorf("cannot decode dead letter: %w", err)
	}
	return d, nil
}
