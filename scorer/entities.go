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
	Entity    string         `json:"entity"`
	ID        string         `json:"id"`
	Features  map[string]any `json:"features"`
	Segments  []string       `json:"segments"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// entity answers GET /v1/entities/{entity}/{id}; rest is "{entity}/{id}".
func (s *Server) entity(ctx *fasthttp.RequestCtx, rest string) {
	if !s.authorize(ctx, config.ScopeRead, "") {
		return
	}
	kind, rawID, ok := strings.Cut(rest, "/")
	if !ok || kind == "" || rawID == "" {
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "use /v1/entities/{entity}/{id}, e.g. /v1/entities/user/612")
		return
	}
	id := rawID // fasthttp has decoded the path already
	if !s.knownEntity(kind) {
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "unknown entity type "+strconv.Quote(kind)+": no feature is defined for it")
		return
	}
	start := time.Now()
	v, err := s.store.Get(storeCtx, kind, id)
	storeSeconds.WithLabelValues("get").Observe(time.Since(start).Seconds())
	switch {
	case errors.Is(err, featurestore.ErrNotFound):
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, kind+" "+strconv.Quote(id)+" not found: no events seen for it")
		return
	case err != nil:
		s.storeError(ctx, err)
		return
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
	httpapi.WriteJSON(ctx, Entity{Entity: kind, ID: id, Features: feats, Segments: segs, UpdatedAt: v.UpdatedAt.UTC()})
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
