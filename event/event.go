package event

import (
	"strconv"
	"strings"
	"time"
)

// Type is a Segment call type.
type Type string

// The Segment call types.
const (
	Track    Type = "track"
	Identify Type = "identify"
	Page     Type = "page"
	Screen   Type = "screen"
	Group    Type = "group"
	Alias    Type = "alias"
)

// Valid reports whether t is one of the six Segment types.
func (t Type) Valid() bool {
	switch t {
	case Track, Identify, Page, Screen, Group, Alias:
		return true
	}
	return false
}

// Event is one normalised Segment event: what ingest writes to pulse.events
// and what every later stage reads. Times are UTC.
type Event struct {
	Type        Type   `json:"type"`
	MessageID   string `json:"messageId"`
	UserID      string `json:"userId,omitempty"`
	AnonymousID string `json:"anonymousId,omitempty"`
	PreviousID  string `json:"previousId,omitempty"` // alias
	GroupID     string `json:"groupId,omitempty"`    // group
	Event       string `json:"event,omitempty"`      // track: the event name
	Name        string `json:"name,omitempty"`       // page, screen

	Properties   map[string]any `json:"properties,omitempty"`
	Traits       map[string]any `json:"traits,omitempty"`
	Context      map[string]any `json:"context,omitempty"`
	Integrations map[string]any `json:"integrations,omitempty"`

	// Timestamp is when the event happened, skew-corrected: the time every
	// window is computed on.
	Timestamp         time.Time `json:"timestamp"`
	OriginalTimestamp time.Time `json:"originalTimestamp,omitzero"`
	SentAt            time.Time `json:"sentAt,omitzero"`
	ReceivedAt        time.Time `json:"receivedAt"`

	// FeatureSet tags an identify made from a /v1/stream feature row.
	FeatureSet string `json:"featureSet,omitempty"`
}

// EntityID is the id features and the Kafka key use: userId, else anonymousId.
func (e *Event) EntityID() string {
	if e.UserID != "" {
		return e.UserID
	}
	return e.AnonymousID
}

// TimestampMillis is Timestamp as epoch milliseconds.
func (e *Event) TimestampMillis() int64 { return e.Timestamp.UnixMilli() }

// Lookup returns the value at a dotted path: "properties.revenue",
// "traits.address.country", "context.page.url", or a top-level field
// ("event", "type", "userId", "timestamp" as epoch ms, ...). ok is false
// when the path does not resolve.
func (e *Event) Lookup(path string) (any, bool) {
	head, rest, _ := strings.Cut(path, ".")
	var m map[string]any
	switch head {
	case "properties":
		m = e.Properties
	case "traits":
		m = e.Traits
	case "context":
		m = e.Context
	case "integrations":
		m = e.Integrations
	default:
		if rest != "" {
			return nil, false
		}
		return e.field(head)
	}
	if rest == "" {
		return m, m != nil
	}
	return LookupMap(m, rest)
}

func (e *Event) field(name string) (any, bool) {
	str := func(s string) (any, bool) { return s, s != "" }
	switch name {
	case "type":
		return string(e.Type), true
	case "messageId":
		return str(e.MessageID)
	case "userId":
		return str(e.UserID)
	case "anonymousId":
		return str(e.AnonymousID)
	case "previousId":
		return str(e.PreviousID)
	case "groupId":
		return str(e.GroupID)
	case "event":
		return str(e.Event)
	case "name":
		return str(e.Name)
	case "featureSet":
		return str(e.FeatureSet)
	case "timestamp":
		return float64(e.Timestamp.UnixMilli()), !e.Timestamp.IsZero()
	case "receivedAt":
		return float64(e.ReceivedAt.UnixMilli()), !e.ReceivedAt.IsZero()
	}
	return nil, false
}

// LookupMap walks a dotted path through nested maps.
func LookupMap(m map[string]any, path string) (any, bool) {
	for {
		if m == nil {
			return nil, false
		}
		head, rest, more := strings.Cut(path, ".")
		v, ok := m[head]
		if !ok {
			return nil, false
		}
		if !more {
			return v, true
		}
		next, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		m, path = next, rest
	}
}

// Number converts a JSON value to float64: numbers, numeric strings and bools.
func Number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return f, err == nil
	}
	return 0, false
}
