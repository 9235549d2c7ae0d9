package scorer

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// Suppressions is the scorer's copy of the suppressions topic
// (pulse.suppressions: the entity ids of people deleted with suppression,
// identity.Suppression values keyed by id; a tombstone lifts one), for GET
// /v1/suppressions. Like Identities it reads every partition from the
// start, read_committed, with no consumer group.
//
// Suppressions is safe for concurrent use: Run writes, lookups read.
type Suppressions struct {
	cfg *config.Config
	log *slog.Logger

	mu  sync.RWMutex
	ids map[string]identity.Suppression
}

// NewSuppressions reads cfg.Kafka.Topics.Suppressions once Run starts.
func NewSuppressions(cfg *config.Config, log *slog.Logger) *Suppressions {
	if log == nil {
		log = slog.Default()
	}
	return &Suppressions{cfg: cfg, log: log.With("component", "suppressions"), ids: map[string]identity.Suppression{}}
}

// Run reads the suppressions topic until ctx ends.
func (sp *Suppressions) Run(ctx context.Context) error {
	return kafka.Follow(ctx, sp.cfg.Kafka, sp.cfg.Kafka.Topics.Suppressions, sp.log, func(fs kgo.Fetches) {
		fs.EachRecord(sp.add)
	})
}

func (sp *Suppressions) add(r *kgo.Record) {
	id := string(r.Key)
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if r.Value == nil {
		delete(sp.ids, id)
		return
	}
	var v identity.Suppression
	if err := json.Unmarshal(r.Value, &v); err != nil {
		sp.log.Warn("an unreadable suppression: listed without its request", "id", id, "err", err)
	}
	sp.ids[id] = v
}

// Suppressed is one suppressed entity id (GET /v1/suppressions).
type Suppressed struct {
	ID string `json:"id"`
	// At and RequestID are the deletion's that suppressed it.
	At        time.Time `json:"at,omitzero"`
	RequestID string    `json:"request_id,omitempty"`
}

// Get is id's suppression; ok is false when id is not suppressed.
func (sp *Suppressions) Get(id string) (Suppressed, bool) {
	sp.mu.RLock()
	defer sp.mu.RUnlock()
	v, ok := sp.ids[id]
	return Suppressed{ID: id, At: v.At.UTC().Truncate(time.Millisecond), RequestID: v.RequestID}, ok
}

// List is every suppressed id, the latest suppressed first.
func (sp *Suppressions) List() []Suppressed {
	sp.mu.RLock()
	out := make([]Suppressed, 0, len(sp.ids))
	for id, v := range sp.ids {
		out = append(out, Suppressed{ID: id, At: v.At.UTC().Truncate(time.Millisecond), RequestID: v.RequestID})
	}
	sp.mu.RUnlock()
	slices.SortFunc(out, func(a, b Suppressed) int {
		if c := b.At.Compare(a.At); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// WithSuppressionList serves GET /v1/suppressions and
// /v1/suppressions/{id} from sp (the caller runs it). Without it those
// answer 503; DELETE /v1/suppressions/{id} needs WithDeletions only.
func WithSuppressionList(sp *Suppressions) Option {
	return func(s *Server) { s.suppressions = sp }
}

// SuppressionList is the answer of GET /v1/suppressions.
type SuppressionList struct {
	Suppressed []Suppressed `json:"suppressed"`
	Total      int          `json:"total"` // all of them, of which Suppressed holds the latest ?limit=
}

// suppressionList answers GET /v1/suppressions (id "") and
// /v1/suppressions/{id} (admin).
func (s *Server) suppressionList(ctx *fasthttp.RequestCtx, id string) {
	if !s.authorize(ctx, config.ScopeAdmin, "") {
		return
	}
	if s.suppressions == nil {
		httpapi.WriteError(ctx, fasthttp.StatusServiceUnavailable, "suppressions are not followed by this scorer (identity.enabled is false, or it serves no profiles)")
		return
	}
	if id != "" {
		v, ok := s.suppressions.Get(id)
		if !ok {
			httpapi.WriteError(ctx, fasthttp.StatusNotFound, "id: "+strconv.Quote(id)+" is not suppressed")
			return
		}
		writeJSONStatus(ctx, fasthttp.StatusOK, v)
		return
	}
	limit, ok := listLimit(ctx)
	if !ok {
		return
	}
	all := s.suppressions.List()
	writeJSONStatus(ctx, fasthttp.StatusOK, SuppressionList{Suppressed: all[:min(limit, len(all))], Total: len(all)})
}
