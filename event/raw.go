package event

import (
	"bytes"
	"time"

	json "github.com/goccy/go-json"
)

// Raw is a pulse.events record with its maps left as raw JSON: the Event
// for a consumer that stores the maps as they came (history's events
// table), read without building them. UnmarshalRaw is its decoder.
type Raw struct {
	Type              Type            `json:"type"`
	MessageID         string          `json:"messageId"`
	UserID            string          `json:"userId"`
	AnonymousID       string          `json:"anonymousId"`
	PreviousID        string          `json:"previousId"`
	GroupID           string          `json:"groupId"`
	Event             string          `json:"event"`
	Name              string          `json:"name"`
	Properties        json.RawMessage `json:"properties"`
	Traits            json.RawMessage `json:"traits"`
	Context           json.RawMessage `json:"context"`
	Integrations      json.RawMessage `json:"integrations"`
	Timestamp         time.Time       `json:"timestamp"`
	OriginalTimestamp time.Time       `json:"originalTimestamp"`
	SentAt            time.Time       `json:"sentAt"`
	ReceivedAt        time.Time       `json:"receivedAt"`
	FeatureSet        string          `json:"featureSet"`
}

// UnmarshalRaw reads a record value as Unmarshal does, accepting exactly
// what it accepts, with its errors, and defaulting the timestamp to
// receivedAt the same way. A map that is absent is left nil.
func UnmarshalRaw(b []byte) (Raw, error) {
	var r Raw
	if err := json.Unmarshal(b, &r); err == nil && r.mapsAreObjects() && r.check() == nil {
		return r, nil
	}
	// Unmarshal gives the verdict and the message; a record it accepts
	// that the fast read did not (a map that is not an object, say) is
	// rebuilt from the Event.
	e, err := Unmarshal(b)
	if err != nil {
		return Raw{}, err
	}
	r = Raw{Type: e.Type, MessageID: e.MessageID, UserID: e.UserID, AnonymousID: e.AnonymousID,
		PreviousID: e.PreviousID, GroupID: e.GroupID, Event: e.Event, Name: e.Name,
		Timestamp: e.Timestamp, OriginalTimestamp: e.OriginalTimestamp, SentAt: e.SentAt, ReceivedAt: e.ReceivedAt,
		FeatureSet: e.FeatureSet}
	r.Properties = rawMap(e.Properties)
	r.Traits = rawMap(e.Traits)
	r.Context = rawMap(e.Context)
	r.Integrations = rawMap(e.Integrations)
	return r, nil
}

// EntityID is the id features use: userId, else anonymousId.
func (r *Raw) EntityID() string {
	if r.UserID != "" {
		return r.UserID
	}
	return r.AnonymousID
}

func (r *Raw) check() error {
	return checkRecord(r.Type, r.UserID, r.AnonymousID, r.Event, &r.Timestamp, r.ReceivedAt)
}

// mapsAreObjects: what decoding into Event's maps would accept.
func (r *Raw) mapsAreObjects() bool {
	for _, m := range [...]json.RawMessage{r.Properties, r.Traits, r.Context, r.Integrations} {
		if len(m) != 0 && !bytes.Equal(m, []byte("null")) && m[0] != '{' {
			return false
		}
	}
	return true
}

func rawMap(m map[string]any) json.RawMessage {
	if m == nil {
		return nil
	}
	b, _ := json.Marshal(m) // decoded from JSON a moment ago: encodable
	return b
}
