package scorer

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/rfm"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// RFMView follows the stream's RFM topic (pulse.rfm: the boundaries and
// each partition's summary with its R × F grid) and the last hour of
// pulse.segments (the moves between RFM groups) for GET /v1/rfm, the
// dashboard's RFM page. Build it with NewRFMView, run it with Run, hand it
// to the scorer with WithRFM.
type RFMView struct {
	cfg *config.Config
	log *slog.Logger

	mu   sync.Mutex
	b    *rfm.Boundaries
	sums map[int32]*rfm.Summary
	// moves are the group changes of the last hour, oldest first, paired
	// from pulse.segments (an exit and an enter of rfm: segments of one
	// entity at one time); half holds the unpaired halves.
	moves []rfmMove
	half  map[string]segment.Record
	now   func() time.Time
}

type rfmMove struct {
	at       time.Time // when the stream wrote it
	from, to string
}

// NewRFMView is a view of cfg's RFM topic; log may be nil.
func NewRFMView(cfg *config.Config, log *slog.Logger) *RFMView {
	if log == nil {
		log = slog.Default()
	}
	return &RFMView{cfg: cfg, log: log.With("component", "rfm"), sums: map[int32]*rfm.Summary{},
		half: map[string]segment.Record{}, now: time.Now}
}

// WithRFM serves GET /v1/rfm from v.
func WithRFM(v *RFMView) Option {
	return func(s *Server) { s.rfm = v }
}

// Run reads the RFM topic from its start and the segments topic from an
// hour ago, then follows both, until ctx ends.
func (v *RFMView) Run(ctx context.Context) error {
	tp := v.cfg.Kafka.Topics
	from := map[string]map[int32]kgo.Offset{tp.RFM: {0: kgo.NewOffset().AtStart()}}
	admin, err := kafka.NewClient(v.cfg.Kafka)
	if err != nil {
		return err
	}
	listed, err := kadm.NewClient(admin).ListOffsetsAfterMilli(ctx, v.now().Add(-time.Hour).UnixMilli(), tp.Segments)
	admin.Close()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("cannot list the last hour's offsets of %s: %w", tp.Segments, err)
	}
	segs := map[int32]kgo.Offset{}
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			segs[o.Partition] = kgo.NewOffset().At(o.Offset)
		}
	})
	from[tp.Segments] = segs
	cl, err := kafka.NewClient(v.cfg.Kafka,
		kgo.ConsumePartitions(from),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			if r.Topic == tp.Segments {
				v.applyChange(r)
			} else {
				v.apply(r)
			}
		})
	}
	return nil
}

// applyChange pairs the exit and enter of rfm: segments into moves.
func (v *RFMView) applyChange(r *kgo.Record) {
	if !bytes.Contains(r.Value, []byte(`"`+rfm.SegmentPrefix)) {
		return
	}
	c, _, err := segment.DecodeRecordRaw(r.Value)
	if err != nil || !strings.HasPrefix(c.Segment, rfm.SegmentPrefix) {
		return
	}
	k := c.EntityID + "|" + c.At.String()
	v.mu.Lock()
	defer v.mu.Unlock()
	other, ok := v.half[k]
	if !ok {
		v.half[k] = c
		return
	}
	delete(v.half, k)
	from, to := other, c
	if from.Change != segment.ChangeExit {
		from, to = c, other
	}
	if from.Change != segment.ChangeExit || to.Change != segment.ChangeEnter || from.Segment == to.Segment {
		// Not a move: two of a kind, or an entity entering a group and
		// leaving it at one time (an anonymous id's first event and the
		// identify that merges it away, both stamped alike).
		return
	}
	v.moves = append(v.moves, rfmMove{at: r.Timestamp, from: from.Segment[len(rfm.SegmentPrefix):], to: to.Segment[len(rfm.SegmentPrefix):]})
	v.prune()
}

// prune drops the moves older than an hour and unpaired halves beyond a
// bound (a first enter has no exit). Under mu.
func (v *RFMView) prune() {
	since := v.now().Add(-time.Hour)
	i := 0
	for i < len(v.moves) && v.moves[i].at.Before(since) {
		i++
	}
	v.moves = v.moves[i:]
	if len(v.half) > 100_000 {
		clear(v.half)
	}
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
	// ascending: the sum of each partition's last summary, counted by its
	// task under the boundaries it scored with then. A summary is made
	// before the boundaries it leads to, and a task switches to new ones
	// on its own, so the partitions' versions may differ by one and trail
	// Version by one; GridVersion is the oldest of them. A partition whose
	// last summary is more than three refreshes older than the newest (its
	// task gone quiet) is left out.
	Grid        []RFMCell `json:"grid"`
	GridVersion int64     `json:"grid_version,omitempty"`
	// At is when the oldest partition summary in the grid was made.
	At         time.Time `json:"at,omitzero"`
	Partitions int       `json:"partitions"`
	// Moves are the last hour's changes between groups, most first.
	Moves []RFMMoveCount `json:"moves"`
}

// RFMMoveCount is how many entities moved from one group to another.
type RFMMoveCount struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Count int    `json:"count"`
}

func (v *RFMView) answer(cfg *config.Config) RFMAnswer {
	if cfg.RFM == nil {
		return RFMAnswer{Grid: []RFMCell{}, Moves: []RFMMoveCount{}}
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
	var newest time.Time
	for _, s := range v.sums {
		if s.At.After(newest) {
			newest = s.At
		}
	}
	for _, s := range v.sums {
		out.Prospects += s.Prospects
		if s.Version == 0 || newest.Sub(s.At) > 3*cfg.RFM.Refresh.D() {
			continue // no boundaries yet (no grid), or a partition gone quiet
		}
		if out.GridVersion == 0 || s.Version < out.GridVersion {
			out.GridVersion = s.Version
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
	v.prune()
	counts := map[[2]string]int{}
	for _, m := range v.moves {
		counts[[2]string{m.from, m.to}]++
	}
	out.Moves = []RFMMoveCount{}
	for k, n := range counts {
		out.Moves = append(out.Moves, RFMMoveCount{From: k[0], To: k[1], Count: n})
	}
	sort.Slice(out.Moves, func(i, j int) bool {
		a, b := out.Moves[i], out.Moves[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return a.From+a.To < b.From+b.To
	})
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
		httpapi.WriteJSON(ctx, RFMAnswer{Grid: []RFMCell{}, Moves: []RFMMoveCount{}})
		return
	}
	httpapi.WriteJSON(ctx, s.rfm.answer(cfg))
}
