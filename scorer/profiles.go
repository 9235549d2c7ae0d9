package scorer

import (
	"context"
	"errors"
	"strconv"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/valyala/fasthttp"
)

// Profile is the answer of GET /v1/profiles/{entity}/{id}: the person id
// belongs to, whichever of its ids is asked.
type Profile struct {
	Entity
	// Identities are the person's linked identifiers, oldest link first;
	// empty when the id was never linked (WithIdentities).
	Identities []ProfileIdentity `json:"identities"`
	// Traits are the latest identify traits of all the person's ids, each
	// trait by event time: online, from the entity's last_by_key feature
	// over `traits` when the config has one (config.ProfileTraits), else
	// from the history (empty without it).
	Traits map[string]any `json:"traits"`
	// TraitsFrom says where Traits came from: "feature:<name>" or "history".
	TraitsFrom string `json:"traits_from"`
	// Events are the person's latest events over all its ids, newest first
	// (?events=N, default 50; from the history).
	Events []ProfileEvent `json:"events"`
	// HistoryError says why traits and events are missing: no history
	// configured, or ClickHouse did not answer in time.
	HistoryError string `json:"history_error,omitempty"`
}

// ProfileIdentity is one linked identifier of a person.
type ProfileIdentity struct {
	Identifier string    `json:"identifier"` // typed: user_id:U, anonymous_id:A, email:e
	Kind       string    `json:"kind"`
	Value      string    `json:"value"`
	LinkedAt   time.Time `json:"linked_at"`  // the cause event's time
	MessageID  string    `json:"message_id"` // the cause event
	Cause      string    `json:"cause"`      // identify or alias
}

// ProfileEvent is one event of a profile, its maps as stored.
type ProfileEvent struct {
	MessageID   string          `json:"messageId"`
	Type        string          `json:"type"`
	Event       string          `json:"event,omitempty"`
	Name        string          `json:"name,omitempty"`
	UserID      string          `json:"userId,omitempty"`
	AnonymousID string          `json:"anonymousId,omitempty"`
	Timestamp   time.Time       `json:"timestamp"`
	Properties  json.RawMessage `json:"properties,omitempty"`
	Traits      json.RawMessage `json:"traits,omitempty"`
}

// ErrNoHistory is what an EventReader answers while there is no history
// to read (no clickhouse.addr, or its local ClickHouse still starting):
// the profile says so in history_error.
var ErrNoHistory = errors.New("no history: clickhouse.addr is not set (or its local ClickHouse is still starting), so traits and events are not kept")

const (
	defaultProfileEvents = 50
	maxProfileEvents     = 1000
	profileHistoryWait   = 2 * time.Second
)

// profile answers GET /v1/profiles/{entity}/{id}; rest is "{entity}/{id}".
func (s *Server) profile(ctx *fasthttp.RequestCtx, rest string) {
	e, ok := s.lookupEntity(ctx, rest, "/v1/profiles") // the key first
	if !ok {
		return
	}
	n := defaultProfileEvents
	if q := ctx.QueryArgs().Peek("events"); q != nil {
		v, err := strconv.Atoi(string(q))
		if err != nil || v < 0 || v > maxProfileEvents {
			httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "events", "want a whole number from 0 to "+strconv.Itoa(maxProfileEvents)+", got "+strconv.Quote(string(q)))
			return
		}
		n = v
	}
	p := Profile{Entity: e, Identities: []ProfileIdentity{}, Traits: map[string]any{}, Events: []ProfileEvent{}}
	ids := []string{e.CanonicalID}
	for _, l := range s.identities.Links(e.CanonicalID) {
		id, err := identity.ParseIdentifier(l.Identifier)
		if err != nil {
			continue
		}
		p.Identities = append(p.Identities, ProfileIdentity{Identifier: l.Identifier, Kind: id.Kind, Value: id.Value,
			LinkedAt: l.At.UTC(), MessageID: l.MessageID, Cause: string(l.Kind)})
		if id.Entity() && id.Value != e.CanonicalID {
			ids = append(ids, id.Value)
		}
	}
	online := s.cfgNow.Load().ProfileTraits(e.Entity)
	if online != "" {
		p.TraitsFrom = "feature:" + online
		if m, ok := e.Features[online].(map[string]any); ok {
			p.Traits = m
		}
	} else {
		p.TraitsFrom = "history"
	}
	if s.events == nil {
		p.HistoryError = ErrNoHistory.Error()
		httpapi.WriteJSON(ctx, p)
		return
	}
	// Not a child of ctx: a context.WithTimeout of a *fasthttp.RequestCtx
	// keeps watching it after the handler returns.
	hctx, cancel := context.WithTimeout(context.Background(), profileHistoryWait)
	defer cancel()
	var err error
	if online == "" {
		var traits map[string]any
		if traits, err = s.events.LatestTraits(hctx, ids); err == nil {
			p.Traits = traits
		}
	}
	if err == nil {
		var evs []event.Raw
		if evs, err = s.events.RecentEvents(hctx, ids, n); err == nil {
			for _, r := range evs {
				p.Events = append(p.Events, ProfileEvent{MessageID: r.MessageID, Type: string(r.Type), Event: r.Event, Name: r.Name,
					UserID: r.UserID, AnonymousID: r.AnonymousID, Timestamp: r.Timestamp, Properties: r.Properties, Traits: r.Traits})
			}
		}
	}
	switch {
	case errors.Is(err, ErrNoHistory):
		p.HistoryError = err.Error()
	case err != nil:
		s.log.Warn("profile: history unavailable", "err", err)
		p.HistoryError = "the history did not answer: " + err.Error()
	}
	httpapi.WriteJSON(ctx, p)
}
