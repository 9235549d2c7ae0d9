package scorer

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/rfm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// RFMView follows the stream's RFM topic (pulse.rfm: the boundaries and
// each partition's summary with its R × F grid) for GET /v1/rfm, the
// dashboard's RFM page. Build it with NewRFMView, run it with Run, hand it
// to the scorer with WithRFM.
type RFMView struct {
	cfg *config.Config
	log *slog.Logger

	mu   sync.Mutex
	b    *rfm.Boundaries
	sums map[int32]*rfm.Summary
}

// NewRFMView is a view of cfg's RFM topic; log may be nil.
func NewRFMView(cfg *config.Config, log *slog.Logger) *RFMView {
	if log == nil {
		log = slog.Default()
	}
	return &RFMView{cfg: cfg, log: log.With("component", "rfm"), sums: map[int32]*rfm.Summary{}}
}

// WithRFM serves GET /v1/rfm from v.
func WithRFM(v *RFMView) Option {
	return func(s *Server) { s.rfm = v }
}

// Run reads the RFM topic from its start, then follows it, until ctx ends.
func (v *RFMView) Run(ctx context.Context) error {
	cl, err := kafka.NewClient(v.cfg.Kafka,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{v.cfg.Kafka.Topics.RFM: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(v.apply)
	}
	return nil
}

func (v *RFMView) apply(r *kgo.Record) {
	k := string(r.Key)
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case k == "boundaries":
		if b, err := rfm.DecodeBoundaries(r.Value); err == nil {
			v.b = b
		}
	case strings.HasPrefix(k, "summary/"):
		if s, err := rfm.DecodeSummary(r.Value); err == nil {
			v.sums[s.Partition] = s
		}
	}
}

// RFMCell is one cell of GET /v1/rfm's grid.
type RFMCell struct {
	R     int    `json:"r"`
	F     int    `json:"f"`
	Group string `json:"group"`
	Count int64  `json:"count"`
	// AvgMonetary is the cell's buyers' mean monetary value; 0 when empty.
	AvgMonetary float64 `json:"avg_monetary"`
}

// RFMAnswer is GET /v1/rfm.
type RFMAnswer struct {
	Enabled   bool  `json:"enabled"`
	Scores    int   `json:"scores,omitempty"`
	Version   int64 `json:"version,omitempty"`
	Buyers    int64 `json:"buyers"`
	Prospects int64 `json:"prospects"`
	// Boundaries are the cuts of r, f and m.
	Boundaries map[string][]float64 `json:"boundaries,omitempty"`
	// Grid is every R × F cell (scores × scores), R descending then F
	// ascending, counted by the stream tasks at their last refresh under
	// Version (a partition not yet on Version is left out of it).
	Grid []RFMCell `json:"grid"`
	// At is when the oldest partition summary in the grid was made.
	At         time.Time `json:"at,omitzero"`
	Partitions int       `json:"partitions"`
}

func (v *RFMView) answer(cfg *config.Config) RFMAnswer {
	if cfg.RFM == nil {
		return RFMAnswer{Grid: []RFMCell{}}
	}
	table, _ := cfg.RFM.Table()
	n := cfg.RFM.Scores
	out := RFMAnswer{Enabled: true, Scores: n}
	cells := map[[2]int]*RFMCell{}
	for r := n; r >= 1; r-- {
		for f := 1; f <= n; f++ {
			out.Grid = append(out.Grid, RFMCell{R: r, F: f, Group: rfm.Match(table, r, f, 1)})
		}
	}
	for i := range out.Grid {
		cells[[2]int{out.Grid[i].R, out.Grid[i].F}] = &out.Grid[i]
	}
	sums := map[[2]int]float64{}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.b != nil {
		out.Version, out.Buyers = v.b.Version, v.b.Buyers
		out.Boundaries = map[string][]float64{"r": v.b.R, "f": v.b.F, "m": v.b.M}
	}
	for _, s := range v.sums {
		out.Prospects += s.Prospects
		if v.b == nil || s.Version != v.b.Version {
			continue
		}
		out.Partitions++
		if out.At.IsZero() || s.At.Before(out.At) {
			out.At = s.At
		}
		for _, c := range s.Grid {
			if cell := cells[[2]int{c.R, c.F}]; cell != nil {
				cell.Count += c.N
				sums[[2]int{c.R, c.F}] += c.Monetary
			}
		}
	}
	for k, c := range cells {
		if c.Count > 0 {
			c.AvgMonetary = sums[k] / float64(c.Count)
		}
	}
	return out
}

// serveRFM answers GET /v1/rfm: the R × F grid with counts and average
// monetary value per cell, the boundaries and the group of each cell.
func (s *Server) serveRFM(ctx *fasthttp.RequestCtx) {
	if !s.authorize(ctx, config.ScopeRead, "") {
		return
	}
	cfg := s.cfgNow.Load()
	if s.rfm == nil {
		if cfg.RFM != nil {
			httpapi.WriteError(ctx, fasthttp.StatusServiceUnavailable, "rfm: this scorer does not follow the RFM topic")
			return
		}
		httpapi.WriteJSON(ctx, RFMAnswer{Grid: []RFMCell{}})
		return
	}
	httpapi.WriteJSON(ctx, s.rfm.answer(cfg))
}
