package identity

import (
	"errors"
	"fmt"
	"strings"
	"time"

	json "github.com/goccy/go-json"
)

// Link is the one record type of the identity topic (pulse.identity,
// compacted, keyed by Identifier) and a row of the identity_links history
// table: from At on, Identifier counts for the person CanonicalID. The
// linker writes one for every identifier whose canonical id changes (the
// canonical identifier itself included, linked to itself), so the latest
// record of an identifier is where it belongs now, and its records by At
// are where it belonged when (Timeline). EncodeLink and DecodeLink are its
// codec; every producer and consumer goes through them.
type Link struct {
	// Identifier is the typed identifier, "kind:value" (Identifier.String).
	Identifier string `json:"identifier"`
	// CanonicalID is the entity id the person's features are kept under:
	// the value of the profile's canonical identifier.
	CanonicalID string `json:"canonical_id"`
	// Previous is the canonical id Identifier counted for before, empty
	// when it was in no profile.
	Previous string `json:"previous_canonical_id,omitempty"`
	// At is the event time of the cause (the point-in-time rule's link
	// time); MessageID is the cause's messageId.
	At        time.Time `json:"at"`
	MessageID string    `json:"message_id"`
	// Kind is the cause's link kind: identify or alias.
	Kind LinkKind `json:"kind"`
}

// EncodeLink is the value of a Link on the identity topic.
func EncodeLink(l Link) ([]byte, error) {
	b, err := json.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("cannot encode identity link: %w", err)
	}
	return b, nil
}

// DecodeLink reads a value written by EncodeLink, checking the fields a
// reader relies on.
func DecodeLink(b []byte) (Link, error) {
	var l Link
	if err := json.Unmarshal(b, &l); err != nil {
		return Link{}, fmt.Errorf("cannot decode identity link: %w", err)
	}
	if _, err := ParseIdentifier(l.Identifier); err != nil {
		return Link{}, fmt.Errorf("cannot decode identity link: %w", err)
	}
	if l.CanonicalID == "" {
		return Link{}, errors.New("cannot decode identity link: no canonical_id")
	}
	return l, nil
}

// wireRequest is a Request on the requests topic.
type wireRequest struct {
	From      string    `json:"from"`
	To        string    `json:"to"`
	Kind      LinkKind  `json:"kind"`
	At        time.Time `json:"at"`
	MessageID string    `json:"message_id"`
	Suppress  bool      `json:"suppress,omitempty"`
}

// EncodeRequest is the value of a Request on the link requests topic
// (pulse.identity.requests).
func EncodeRequest(r Request) ([]byte, error) {
	b, err := json.Marshal(wireRequest{From: r.From.String(), To: r.To.String(), Kind: r.Kind, At: r.At, MessageID: r.MessageID, Suppress: r.Suppress})
	if err != nil {
		return nil, fmt.Errorf("cannot encode link request: %w", err)
	}
	return b, nil
}

// DecodeRequest reads a value written by EncodeRequest.
func DecodeRequest(b []byte) (Request, error) {
	var w wireRequest
	if err := json.Unmarshal(b, &w); err != nil {
		return Request{}, fmt.Errorf("cannot decode link request: %w", err)
	}
	from, err := ParseIdentifier(w.From)
	if err != nil {
		return Request{}, fmt.Errorf("cannot decode link request: from: %w", err)
	}
	to, err := ParseIdentifier(w.To)
	if err != nil {
		return Request{}, fmt.Errorf("cannot decode link request: to: %w", err)
	}
	if w.Kind != KindIdentify && w.Kind != KindAlias && w.Kind != KindForget {
		return Request{}, fmt.Errorf("cannot decode link request: unknown kind %q", w.Kind)
	}
	return Request{From: from, To: to, Kind: w.Kind, At: w.At, MessageID: w.MessageID, Suppress: w.Suppress && w.Kind == KindForget}, nil
}

// Forget is the deletion request of the person subject is in (the profile
// API's DELETE, `pulse delete`), asked at at, with id naming it: the
// record's key on the requests topic is subject's value.
func Forget(subject Identifier, at time.Time, id string) Request {
	return Request{From: subject, To: subject, Kind: KindForget, At: at, MessageID: id}
}

// Suppression is the value of a suppressed entity id on the suppressions
// topic (keyed by the id): the deletion that suppressed it.
type Suppression struct {
	At        time.Time `json:"at"`
	RequestID string    `json:"request_id"`
}

// EncodeSuppression is the suppressions topic's value for the ids of
// deletion r.
func EncodeSuppression(r Request) []byte {
	b, _ := json.Marshal(Suppression{At: r.At, RequestID: r.MessageID}) // a time and a string: cannot fail
	return b
}

// ReservedKeyPrefix starts the keys of the identity topic's records that
// are not links: the linker's own (its fences and "__linker/offset").
// Every reader of the topic skips them (IsLink).
const ReservedKeyPrefix = "__"

// IsLink reports whether a record of the identity topic with this key is a
// Link (or a link's tombstone), not one of the linker's own records.
func IsLink(key []byte) bool { return !strings.HasPrefix(string(key), ReservedKeyPrefix) }
