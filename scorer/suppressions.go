package scorer

import (
	"strconv"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/suppression"
	"github.com/valyala/fasthttp"
)

// WithSuppressionList serves GET /v1/suppressions and
// /v1/suppressions/{id} from sp, the suppressions topic's table (the
// caller runs it). Without it those answer 503; DELETE
// /v1/suppressions/{id} needs WithDeletions only.
func WithSuppressionList(sp *suppression.Table) Option {
	return func(s *Server) { s.suppressions = sp }
}

// SuppressionList is the answer of GET /v1/suppressions.
type SuppressionList struct {
	Suppressed []suppression.Entry `json:"suppressed"`
	Total      int                 `json:"total"` // all of them, of which Suppressed holds the latest ?limit=
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
			httpapi.WriteFieldError(ctx, fasthttp.StatusNotFound, "id", strconv.Quote(id)+" is not suppressed")
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
