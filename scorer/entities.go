package scorer

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/valyala/fasthttp"
)

// Entity is the answer of GET /v1/entities/{entity}/{id}.
type Entity struct {
	Entity string `json:"entity"`
	ID     string `json:"id"`
	// CanonicalID is the id the entity's events count for: its own, or,
	// for an id merged into another person (identity resolution), that
	// person's, whose features and segments are answered.
	CanonicalID string         `json:"canonical_id"`
	Features    map[string]any `json:"features"`
	Segments    []string       `json:"segments"`
	UpdatedAt   time.Time      `json:"updated_at"`
}

// entity answers GET /v1/entities/{entity}/{id}; rest is "{entity}/{id}".
func (s *Server) entity(ctx *fasthttp.RequestCtx, rest string) {
	e, ok := s.lookupEntity(ctx, rest, "/v1/entities")
	if ok {
		httpapi.WriteJSON(ctx, e)
	}
}

// lookupEntity reads the vector of "{entity}/{id}" (of the person id was
// merged into, if any: followCanonical) with its derived features as of
// now, or answers the error and returns false. path names the endpoint in
// errors.
func (s *Server) lookupEntity(ctx *fasthttp.RequestCtx, rest, path string) (Entity, bool) {
	if !s.authorize(ctx, config.ScopeRead, "") {
		return Entity{}, false
	}
	kind, rawID, ok := strings.Cut(rest, "/")
	if !ok || kind == "" || rawID == "" {
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "use "+path+"/{entity}/{id}, e.g. "+path+"/user/612")
		return Entity{}, false
	}
	id := rawID // fasthttp has decoded the path already
	if !s.knownEntity(kind) {
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "unknown entity type "+strconv.Quote(kind)+": no feature is defined for it")
		return Entity{}, false
	}
	start := time.Now()
	v, err := s.store.Get(storeCtx, kind, id)
	storeSeconds.WithLabelValues("get").Observe(time.Since(start).Seconds())
	switch {
	case errors.Is(err, featurestore.ErrNotFound):
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, kind+" "+strconv.Quote(id)+" not found: no events seen for it")
		return Entity{}, false
	case err != nil:
		s.storeError(ctx, err)
		return Entity{}, false
	}
	e, err := s.entityOf(kind, id, v)
	if err != nil {
		s.storeError(ctx, err)
		return Entity{}, false
	}
	return e, true
}

// entityOf is the answer for entity kind/id whose stored vector is v: the
// person's it was merged into (followCanonical), its derived features
// refreshed as of now.
func (s *Server) entityOf(kind, id string, v featurestore.Vector) (Entity, error) {
	v, canonical, err := s.followCanonical(kind, v, id)
	if err != nil {
		return Entity{}, err
	}
	feats := make(map[string]any, len(v.Features))
	(*s.derive.Load()).refreshInto(feats, kind, v, s.now())
	for k, x := range feats {
		if f, ok := x.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
			feats[k] = nil // JSON has no NaN; it means "no value"
		}
	}
	segs := v.Segments
	if segs == nil {
		segs = []string{}
	}
	return Entity{Entity: kind, ID: id, CanonicalID: canonical, Features: feats, Segments: segs, UpdatedAt: v.UpdatedAt.UTC()}, nil
}

// followCanonical returns the vector of the person v's entity was merged
// into (following a chain of merges, A → U → V, up to 8 hops) and its id;
// v and id themselves when it was not merged, or when the canonical
// entity's vector is not written yet.
func (s *Server) followCanonical(kind string, v featurestore.Vector, id string) (featurestore.Vector, string, error) {
	for range 8 {
		if v.CanonicalID == "" || v.CanonicalID == id {
			break
		}
		next, err := s.store.Get(storeCtx, kind, v.CanonicalID)
		if errors.Is(err, featurestore.ErrNotFound) {
			return v, v.CanonicalID, nil
		}
		if err != nil {
			return v, id, err
		}
		v, id = next, v.CanonicalID
	}
	return v, id, nil
}

func (s *Server) knownEntity(kind string) bool {
	cfg := s.cfgNow.Load()
	for i := range cfg.Features {
		if cfg.Features[i].Entity == kind || (cfg.Features[i].Entity == "" && kind == "user") {
			return true
		}
	}
	for i := range cfg.Models {
		if cfg.Models[i].Entity == kind {
			return true
		}
	}
	return kind == "user" && len(cfg.Features) == 0
}

// storeCtx is the context of the store calls a request makes, not the
// *fasthttp.RequestCtx: that one's Done is the server's, read without
// synchronisation by a dial's context watcher that may outlive the
// request (Redis down: a race with Shutdown), and it is never cancelled
// anyway. Each store call is bounded by the store's own timeout.
var storeCtx = context.Background()

func (s *Server) storeError(ctx *fasthttp.RequestCtx, err error) {
	s.log.Warn("online store error", "err", err)
	ctx.Response.Header.Set("Retry-After", "1")
	httpapi.WriteError(ctx, fasthttp.StatusServiceUnavailable, "the online store is unavailable: "+err.Error())
}
