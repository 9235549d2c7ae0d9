package rfm

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"
)

// Quantile is numpy.quantile(sorted, q) with the default linear method:
// the value at rank (n-1)q, interpolated between the closest ranks. sorted
// must be ascending and not empty.
func Quantile(sorted []float64, q float64) float64 {
	h := float64(len(sorted)-1) * q
	lo := int(math.Floor(h))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	a, b, t := sorted[lo], sorted[lo+1], h-float64(lo)
	if t >= 0.5 { // numpy's _lerp, for the same rounding
		return b - (b-a)*(1-t)
	}
	return a + (b-a)*t
}

// Cuts are the scores-1 boundaries of sorted: its quantiles at k/scores.
// Nil when sorted is empty.
func Cuts(sorted []float64, scores int) []float64 {
	if len(sorted) == 0 {
		return nil
	}
	out := make([]float64, scores-1)
	for k := range out {
		out[k] = Quantile(sorted, float64(k+1)/float64(scores))
	}
	return out
}

// above is the number of cuts strictly below v.
func above(v float64, cuts []float64) int {
	return sort.Search(len(cuts), func(i int) bool { return cuts[i] >= v })
}

// ScoreHigher scores v where more is better (frequency, monetary): 1 plus
// the cuts below v.
func ScoreHigher(v float64, cuts []float64) int { return 1 + above(v, cuts) }

// ScoreLower scores v where less is better (recency in days): the number
// of scores minus the cuts below v.
func ScoreLower(v float64, cuts []float64) int { return len(cuts) + 1 - above(v, cuts) }

// Boundaries are one version of the population's cuts, as every stream
// task scores with them.
type Boundaries struct {
	Version int64     `json:"version"`
	Scores  int       `json:"scores"`
	R       []float64 `json:"r"`
	F       []float64 `json:"f"`
	M       []float64 `json:"m"`
	// Buyers is the population they were computed from.
	Buyers int64     `json:"buyers"`
	At     time.Time `json:"at"`
}

// Usable reports whether b can score: it has cuts for every dimension.
func (b *Boundaries) Usable() bool {
	return b != nil && b.Scores >= 2 && len(b.R) == b.Scores-1 && len(b.F) == b.Scores-1 && len(b.M) == b.Scores-1
}

// Score returns the scores of a buyer's recency, frequency and monetary
// values.
func (b *Boundaries) Score(rv, fv, mv float64) (r, f, m int) {
	return ScoreLower(rv, b.R), ScoreHigher(fv, b.F), ScoreHigher(mv, b.M)
}

// NextRecencyCut is the recency value past which a buyer at rv drops one
// R score (the first cut >= rv); ok is false at the lowest score.
func (b *Boundaries) NextRecencyCut(rv float64) (cut float64, ok bool) {
	i := above(rv, b.R)
	if i >= len(b.R) {
		return 0, false
	}
	return b.R[i], true
}

// Newer reports whether b supersedes o (nil: anything does): a higher
// version, or the same version published later (two publishers during a
// rebalance), so every reader settles on the same boundaries.
func (b *Boundaries) Newer(o *Boundaries) bool {
	if o == nil {
		return true
	}
	if b.Version != o.Version {
		return b.Version > o.Version
	}
	return b.At.After(o.At)
}

// Same reports whether b and o are the same publication.
func (b *Boundaries) Same(o *Boundaries) bool {
	return o != nil && b.Version == o.Version && b.At.Equal(o.At) && b.SameCuts(o)
}

// SameCuts reports whether b and o score alike.
func (b *Boundaries) SameCuts(o *Boundaries) bool {
	return o != nil && b.Scores == o.Scores && slices.Equal(b.R, o.R) && slices.Equal(b.F, o.F) && slices.Equal(b.M, o.M)
}

// Encode is the record value on the RFM topic.
func (b *Boundaries) Encode() []byte {
	v, _ := json.Marshal(b) // no unencodable field
	return v
}

// DecodeBoundaries reads Encode's output.
func DecodeBoundaries(v []byte) (*Boundaries, error) {
	var b Boundaries
	if err := json.Unmarshal(v, &b); err != nil {
		return nil, fmt.Errorf("cannot decode rfm boundaries: %w", err)
	}
	return &b, nil
}

// DefaultK is the points a Summary keeps per dimension.
const DefaultK = 1024

// Points summarise one dimension of one partition: every value (sorted)
// while there are at most k, else k quantile points each standing for
// N/k values.
type Points struct {
	N      int64     `json:"n"`
	Values []float64 `json:"v"`
}

// Exact reports whether p holds every value.
func (p Points) Exact() bool { return int64(len(p.Values)) == p.N }

// Summarize sorts values in place and keeps at most k points of them.
func Summarize(values []float64, k int) Points {
	slices.Sort(values)
	n := len(values)
	if n <= k {
		return Points{N: int64(n), Values: slices.Clone(values)}
	}
	out := make([]float64, k)
	for i := range out {
		out[i] = Quantile(values, (float64(i)+0.5)/float64(k))
	}
	return Points{N: int64(n), Values: out}
}

// Summary is one partition's values of the three dimensions, and its
// R × F grid under the boundaries version it scored with (for the
// dashboard).
type Summary struct {
	Partition int32     `json:"partition"`
	R         Points    `json:"r"`
	F         Points    `json:"f"`
	M         Points    `json:"m"`
	At        time.Time `json:"at"`
	// Version is the boundaries version of Grid, 0 when none.
	Version   int64  `json:"version,omitempty"`
	Grid      []Cell `json:"grid,omitempty"`
	Prospects int64  `json:"prospects,omitempty"`
}

// Cell is one R × F cell of a grid: its buyers and the sum of their
// monetary values.
type Cell struct {
	R        int     `json:"r"`
	F        int     `json:"f"`
	N        int64   `json:"n"`
	Monetary float64 `json:"monetary"`
}

// Grid counts buyers by their R and F scores under b: add them one by one.
type Grid map[[2]int]*Cell

// Add counts one buyer's values.
func (g Grid) Add(b *Boundaries, rv, fv, mv float64) {
	r, f, _ := b.Score(rv, fv, mv)
	c := g[[2]int{r, f}]
	if c == nil {
		c = &Cell{R: r, F: f}
		g[[2]int{r, f}] = c
	}
	c.N++
	c.Monetary += mv
}

// Cells lists the grid's cells, R then F ascending.
func (g Grid) Cells() []Cell {
	out := make([]Cell, 0, len(g))
	for _, c := range g {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Cell) int {
		if a.R != b.R {
			return a.R - b.R
		}
		return a.F - b.F
	})
	return out
}

// Encode is the record value on the RFM topic.
func (s *Summary) Encode() []byte {
	v, _ := json.Marshal(s)
	return v
}

// DecodeSummary reads Encode's output.
func DecodeSummary(v []byte) (*Summary, error) {
	var s Summary
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, fmt.Errorf("cannot decode rfm summary: %w", err)
	}
	return &s, nil
}

// MergeCuts computes the cuts of the population the parts summarise:
// exactly (numpy's) when every part holds all its values, else the
// weighted quantiles of their points (within a fraction 1/k of the
// population in rank). Nil when the parts are empty.
func MergeCuts(parts []Points, scores int) []float64 {
	exact := true
	var n int64
	var all []float64
	for _, p := range parts {
		exact = exact && p.Exact()
		n += p.N
		all = append(all, p.Values...)
	}
	if n == 0 {
		return nil
	}
	if exact {
		slices.Sort(all)
		return Cuts(all, scores)
	}
	type wp struct{ v, w float64 }
	pts := make([]wp, 0, len(all))
	for _, p := range parts {
		for _, v := range p.Values {
			pts = append(pts, wp{v, float64(p.N) / float64(len(p.Values))})
		}
	}
	slices.SortFunc(pts, func(a, b wp) int { return cmpFloat(a.v, b.v) })
	out := make([]float64, scores-1)
	for k := range out {
		h := float64(n-1) * float64(k+1) / float64(scores) // target rank
		var c float64
		i := 0
		for ; i < len(pts)-1; i++ {
			if c += pts[i].w; c > h {
				break
			}
		}
		out[k] = pts[i].v
	}
	return out
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Merge computes boundaries from every partition's summary.
func Merge(sums []*Summary, scores int, version int64, at time.Time) *Boundaries {
	var r, f, m []Points
	var n int64
	for _, s := range sums {
		r, f, m = append(r, s.R), append(f, s.F), append(m, s.M)
		n += s.R.N
	}
	return &Boundaries{Version: version, Scores: scores, R: MergeCuts(r, scores), F: MergeCuts(f, scores),
		M: MergeCuts(m, scores), Buyers: n, At: at}
}
