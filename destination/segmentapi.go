package destination

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/segment"
)

// Event names of the Segment spec's audience calls (Segment Engage's),
// and of a trait change's track (TraitTrack).
const (
	AudienceEntered = "Audience Entered"
	AudienceExited  = "Audience Exited"
	TraitChanged    = "Trait Changed"
)

// SegmentAPI sends changes in the Segment spec to any Segment-API
// endpoint (Segment, RudderStack, Jitsu, another Pulse): one track
// "Audience Entered" or "Audience Exited" per change, with the properties
// {audience_key: <segment>, <segment>: true|false}, and with Identify an
// identify setting the trait <segment>: true|false; a batch goes in one
// POST to <URL>/v1/batch, authenticated with the write key (HTTP Basic,
// as Segment's libraries send it). The track's messageId is the change's
// idempotency key, the identify's that key + "-identify", so a receiver
// that dedupes on messageId (Segment, Pulse) keeps one of each.
//
// A trait change is an identify setting the trait <trait>: <score rounded
// to Decimals> (null when there is none), its messageId the change's
// idempotency key; with TraitTrack, also a track "Trait Changed" with the
// properties {trait, score, previous, model_version}, its messageId that
// key + "-track".
//
// The exits of a person deleted on request carry the property
// reason: "deleted" and send no identify.
type SegmentAPI struct {
	URL        string // the base URL; /v1/batch is appended
	WriteKey   string
	Identify   bool
	TraitTrack bool
	Decimals   int
	Client     *http.Client // default NewHTTPClient()
}

// segmentCall is one call of a /v1/batch body.
type segmentCall struct {
	Type       string         `json:"type"`
	Event      string         `json:"event,omitempty"`
	UserID     string         `json:"userId"`
	MessageID  string         `json:"messageId"`
	Timestamp  time.Time      `json:"timestamp"`
	Properties map[string]any `json:"properties,omitempty"`
	Traits     map[string]any `json:"traits,omitempty"`
	Context    map[string]any `json:"context"`
}

var segmentContext = map[string]any{"library": map[string]any{"name": "pulse", "version": "1"}}

// Deliver implements Sink.
func (s *SegmentAPI) Deliver(ctx context.Context, batch []Change) []Failure {
	calls := make([]segmentCall, 0, len(batch)*2)
	index := make([]int, 0, len(batch)*2) // call -> change
	for i := range batch {
		c := &batch[i]
		if ts := c.Trait; ts != nil {
			f := TraitFilter{Decimals: s.Decimals}
			score := orNil(f.Round(ts.Score))
			calls = append(calls, segmentCall{
				Type: "identify", UserID: c.EntityID, MessageID: c.Key(), Timestamp: c.At,
				Traits: map[string]any{ts.Trait: score}, Context: segmentContext,
			})
			index = append(index, i)
			if s.TraitTrack {
				calls = append(calls, segmentCall{
					Type: "track", Event: TraitChanged, UserID: c.EntityID, MessageID: c.Key() + "-track", Timestamp: c.At,
					Properties: map[string]any{"trait": ts.Trait, "score": score, "previous": orNil(f.Round(ts.Previous)), "model_version": ts.Version},
					Context:    segmentContext,
				})
				index = append(index, i)
			}
			continue
		}
		entered := c.Change == segment.ChangeEnter
		event := AudienceExited
		if entered {
			event = AudienceEntered
		}
		props := map[string]any{"audience_key": c.Segment, c.Segment: entered}
		if c.Reason != "" {
			props["reason"] = c.Reason // deleted: the person was deleted on request
		}
		calls = append(calls, segmentCall{
			Type: "track", Event: event, UserID: c.EntityID, MessageID: c.Key(), Timestamp: c.At,
			Properties: props, Context: segmentContext,
		})
		index = append(index, i)
		// No identify for a deleted person: it would write traits of
		// someone who asked to be forgotten.
		if s.Identify && c.Reason != segment.ReasonDeleted {
			calls = append(calls, segmentCall{
				Type: "identify", UserID: c.EntityID, MessageID: c.Key() + "-identify", Timestamp: c.At,
				Traits: map[string]any{c.Segment: entered}, Context: segmentContext,
			})
			index = append(index, i)
		}
	}
	body, err := json.Marshal(map[string]any{"batch": calls, "sentAt": time.Now().UTC()})
	if err != nil {
		return failAll(len(batch), Failure{Err: fmt.Errorf("cannot encode batch: %w", err)})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(s.URL, "/")+"/v1/batch", bytes.NewReader(body))
	if err != nil {
		return failAll(len(batch), Failure{Err: fmt.Errorf("cannot build request: %w", err)})
	}
	req.SetBasicAuth(s.WriteKey, "")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pulse-destinations/1")
	answer, f := send(s.client(), req)
	if f != nil {
		return failAll(len(batch), *f)
	}
	// A receiver that refuses single items says which (Pulse's ingest:
	// {"success": true, "rejected": [{"index": 3, "error": "..."}]}).
	var a struct {
		Rejected []struct {
			Index int    `json:"index"`
			Error string `json:"error"`
		} `json:"rejected"`
	}
	if json.Unmarshal(answer, &a) != nil {
		return nil
	}
	var fails []Failure
	seen := map[int]bool{}
	for _, r := range a.Rejected {
		if r.Index < 0 || r.Index >= len(index) || seen[index[r.Index]] {
			continue
		}
		seen[index[r.Index]] = true
		fails = append(fails, Failure{Index: index[r.Index], Err: errors.New("receiver rejected the item: " + r.Error)})
	}
	return fails
}

func (s *SegmentAPI) client() *http.Client {
	if s.Client == nil {
		return defaultClient
	}
	return s.Client
}
