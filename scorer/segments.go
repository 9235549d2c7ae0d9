package scorer

import (
	"strconv"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/valyala/fasthttp"
)

// Segment is one segment as GET /v1/segments lists it.
type Segment struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Entity      string `json:"entity"`
	Rule        string `json:"rule"`
	Members     int64  `json:"members"`
}

// SegmentHistory is a Segment as GET /v1/segments?history= lists it: with
// its member counts over the period asked, as the server sampled them.
type SegmentHistory struct {
	Segment
	// History is [unix ms, members] pairs, oldest first: a point when the
	// count changed, and at least one a minute while it held. The first
	// point may be older than the period: it is the count at its start.
	History [][2]int64 `json:"history"`
	// HistorySince (unix ms) is when this scorer began sampling the
	// segment: the server knows nothing of the count before it.
	HistorySince int64 `json:"history_since"`
}

// Members is a page of GET /v1/segments/{name}/members.
type Members struct {
	Segment string   `json:"segment"`
	Entity  string   `json:"entity"`
	Members []string `json:"members"`
	// NextCursor fetches the next page; "" on the last page.
	NextCursor string `json:"next_cursor"`
}

// Page sizes of the members endpoint.
const (
	defaultMembersLimit = 100
	maxMembersLimit     = 1000
)

func (s *Server) segments(ctx *fasthttp.RequestCtx) {
	if !s.authorize(ctx, config.ScopeRead, "") {
		return
	}
	history, ok := historyParam(ctx)
	if !ok {
		return
	}
	cfg := s.cfgNow.Load()
	out := make([]Segment, 0, len(cfg.Segments))
	for i := range cfg.Segments {
		seg, err := s.describe(ctx, &cfg.Segments[i])
		if err != nil {
			s.storeError(ctx, err)
			return
		}
		out = append(out, seg)
	}
	if history == 0 {
		httpapi.WriteJSON(ctx, struct {
			Segments []Segment `json:"segments"`
		}{out})
		return
	}
	withHistory := make([]SegmentHistory, len(out))
	for i := range out {
		withHistory[i] = s.withHistory(out[i], &cfg.Segments[i], history)
	}
	httpapi.WriteJSON(ctx, struct {
		Segments []SegmentHistory `json:"segments"`
	}{withHistory})
}

func (s *Server) segment(ctx *fasthttp.RequestCtx, name string) {
	if !s.authorize(ctx, config.ScopeRead, "") {
		return
	}
	history, ok := historyParam(ctx)
	if !ok {
		return
	}
	cs := s.findSegment(ctx, name)
	if cs == nil {
		return
	}
	seg, err := s.describe(ctx, cs)
	if err != nil {
		s.storeError(ctx, err)
		return
	}
	if history == 0 {
		httpapi.WriteJSON(ctx, seg)
		return
	}
	httpapi.WriteJSON(ctx, s.withHistory(seg, cs, history))
}

func (s *Server) members(ctx *fasthttp.RequestCtx, name string) {
	if !s.authorize(ctx, config.ScopeRead, "") {
		return
	}
	cs := s.findSegment(ctx, name)
	if cs == nil {
		return
	}
	args := ctx.QueryArgs()
	limit := defaultMembersLimit
	if raw := args.Peek("limit"); len(raw) > 0 {
		n, err := strconv.Atoi(string(raw))
		if err != nil || n < 1 {
			httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "limit", "want a whole number from 1 to "+strconv.Itoa(maxMembersLimit)+", got "+strconv.Quote(string(raw)))
			return
		}
		limit = min(n, maxMembersLimit)
	}
	start := time.Now()
	ids, next, err := s.store.SegmentMembers(storeCtx, segEntity(cs), cs.Name, string(args.Peek("cursor")), limit)
	storeSeconds.WithLabelValues("members").Observe(time.Since(start).Seconds())
	if err != nil {
		s.storeError(ctx, err)
		return
	}
	if ids == nil {
		ids = []string{}
	}
	httpapi.WriteJSON(ctx, Members{Segment: cs.Name, Entity: segEntity(cs), Members: ids, NextCursor: next})
}

func (s *Server) findSegment(ctx *fasthttp.RequestCtx, name string) *config.Segment {
	cfg := s.cfgNow.Load()
	for i := range cfg.Segments {
		if cfg.Segments[i].Name == name {
			return &cfg.Segments[i]
		}
	}
	httpapi.WriteError(ctx, fasthttp.StatusNotFound, "unknown segment "+strconv.Quote(name))
	return nil
}

func (s *Server) describe(ctx *fasthttp.RequestCtx, cs *config.Segment) (Segment, error) {
	start := time.Now()
	n, err := s.store.SegmentCount(storeCtx, segEntity(cs), cs.Name)
	storeSeconds.WithLabelValues("count").Observe(time.Since(start).Seconds())
	if err != nil {
		return Segment{}, err
	}
	return Segment{Name: cs.Name, Description: cs.Description, Entity: segEntity(cs), Rule: cs.Rule, Members: n}, nil
}

func segEntity(cs *config.Segment) string {
	if cs.Entity == "" {
		return "user"
	}
	return cs.Entity
}
