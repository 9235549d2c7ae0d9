package scorer

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/rfm"
	"github.com/valyala/fasthttp"
)

// RFMCellMembers is a page of GET /v1/rfm/cells/{r}/{f}/members: the
// members of the RFM groups that hold the cell whose rfm_r and rfm_f are
// the cell's.
type RFMCellMembers struct {
	R       int      `json:"r"`
	F       int      `json:"f"`
	Groups  []string `json:"groups"` // the rfm: segments read
	Entity  string   `json:"entity"`
	Members []string `json:"members"`
	// Scanned is how many group members this page read to find them: a
	// page may hold fewer than limit and still have a next one.
	Scanned    int    `json:"scanned"`
	NextCursor string `json:"next_cursor"`
}

// cellScanFactor bounds a page's work: it reads at most this many group
// members per member asked for, then answers what it found with a cursor.
const cellScanFactor = 20

// rfmCellMembers answers GET /v1/rfm/cells/{r}/{f}/members; rest is
// "{r}/{f}/members". A cell belongs to the group the table gives it (with
// the default table, whatever M); the page reads that group's members
// through the store and keeps those whose vector is in the cell, at most
// limit, reading at most cellScanFactor × limit members. The cursor is
// "<group index>.<store cursor>".
func (s *Server) rfmCellMembers(ctx *fasthttp.RequestCtx, rest string) {
	if !s.authorize(ctx, config.ScopeRead, "") {
		return
	}
	cfg := s.cfgNow.Load()
	if cfg.RFM == nil {
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "rfm: the config has no rfm block")
		return
	}
	parts := strings.Split(rest, "/")
	n := cfg.RFM.Scores
	cell := [2]int{}
	if len(parts) != 3 || parts[2] != "members" {
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "not found: want /v1/rfm/cells/{r}/{f}/members")
		return
	}
	for i, name := range []string{"r", "f"} {
		v, err := strconv.Atoi(parts[i])
		if err != nil || v < 1 || v > n {
			httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, name, fmt.Sprintf("want a score from 1 to %d, got %q", n, parts[i]))
			return
		}
		cell[i] = v
	}
	limit := defaultMembersLimit
	if raw := ctx.QueryArgs().Peek("limit"); len(raw) > 0 {
		v, err := strconv.Atoi(string(raw))
		if err != nil || v < 1 {
			httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "limit", "want a whole number from 1 to "+strconv.Itoa(maxMembersLimit)+", got "+strconv.Quote(string(raw)))
			return
		}
		limit = min(v, maxMembersLimit)
	}
	table, _ := cfg.RFM.Table()
	var groups []string
	for m := 1; m <= n; m++ {
		if g := rfm.Match(table, cell[0], cell[1], m); g != "" && !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	gi, cursor := 0, ""
	if raw := string(ctx.QueryArgs().Peek("cursor")); raw != "" {
		i, c, ok := strings.Cut(raw, ".")
		v, err := strconv.Atoi(i)
		if !ok || err != nil || v < 0 || v >= len(groups) {
			httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "cursor", "not one this endpoint gave, got "+strconv.Quote(raw))
			return
		}
		gi, cursor = v, c
	}
	entity := cfg.RFM.Entity
	if entity == "" {
		entity = "user"
	}
	out := RFMCellMembers{R: cell[0], F: cell[1], Groups: []string{}, Entity: entity, Members: []string{}}
	for _, g := range groups {
		out.Groups = append(out.Groups, rfm.SegmentPrefix+g)
	}
	start := time.Now()
	defer func() { storeSeconds.WithLabelValues("members").Observe(time.Since(start).Seconds()) }()
	for gi < len(groups) && len(out.Members) < limit && out.Scanned < cellScanFactor*limit {
		ids, next, err := s.store.SegmentMembers(storeCtx, entity, rfm.SegmentPrefix+groups[gi], cursor, min(maxMembersLimit, cellScanFactor*limit-out.Scanned))
		if err != nil {
			s.storeError(ctx, err)
			return
		}
		vecs, found, err := s.store.GetMany(storeCtx, entity, ids)
		if err != nil {
			s.storeError(ctx, err)
			return
		}
		// Keep the page's members in the cell, up to limit; the cursor
		// resumes after the last one read.
		taken := len(ids)
		for i := range ids {
			if len(out.Members) == limit {
				taken = i
				break
			}
			if found[i] && score(vecs[i].Features[config.FeatureRFMR]) == cell[0] && score(vecs[i].Features[config.FeatureRFMF]) == cell[1] {
				out.Members = append(out.Members, ids[i])
			}
		}
		out.Scanned += taken
		switch {
		case taken < len(ids):
			// stopped inside the page: resume at the first id not read
			// (a store cursor is the last id returned)
			if taken == 0 {
				out.NextCursor = strconv.Itoa(gi) + "." + cursor
			} else {
				out.NextCursor = strconv.Itoa(gi) + "." + ids[taken-1]
			}
			httpapi.WriteJSON(ctx, out)
			return
		case next != "":
			cursor = next
		default:
			gi, cursor = gi+1, ""
		}
		if gi < len(groups) {
			out.NextCursor = strconv.Itoa(gi) + "." + cursor
		} else {
			out.NextCursor = ""
		}
	}
	httpapi.WriteJSON(ctx, out)
}

// score reads an RFM score feature (a number), 0 when it has none.
func score(v any) int {
	f, ok := v.(float64)
	if !ok {
		return 0
	}
	return int(f)
}
