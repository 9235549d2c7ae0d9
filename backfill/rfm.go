package backfill

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/rfm"
)

// rfmFeatures are the RFM features verify checks: the scores and the
// group, which the boundaries and the recomputed values give (the
// previous group and its change time are the stream's history alone).
var rfmFeatures = []string{config.FeatureRFMR, config.FeatureRFMF, config.FeatureRFMM, config.FeatureRFMGroup}

// rfmCheck recomputes an entity's RFM features with rfm.Assign, as the
// stream does, from the recomputed values and the given boundaries.
type rfmCheck struct {
	b       *rfm.Boundaries
	scores  int
	groups  []rfm.Group
	r, f, m int // set indexes of recency, frequency, monetary
	names   []string
}

// compileRFM prepares the check of names (nil: no check) with b; asked
// for by name without boundaries, it says so.
func compileRFM(cfg *config.Config, set *aggregate.Set, names []string, b *rfm.Boundaries, byName bool) (*rfmCheck, error) {
	if len(names) == 0 {
		return nil, nil
	}
	if b == nil {
		if byName {
			return nil, errors.New("no RFM boundaries to check the RFM features with (the stream has published none yet?)")
		}
		return nil, nil
	}
	groups, err := cfg.RFM.Table()
	if err != nil {
		return nil, err
	}
	c := &rfmCheck{b: b, scores: cfg.RFM.Scores, groups: groups, names: names,
		r: set.Index(cfg.RFM.Recency), f: set.Index(cfg.RFM.Frequency), m: set.Index(cfg.RFM.Monetary)}
	if c.r < 0 || c.f < 0 || c.m < 0 {
		return nil, fmt.Errorf("rfm: recency %q, frequency %q and monetary %q must be user features", cfg.RFM.Recency, cfg.RFM.Frequency, cfg.RFM.Monetary)
	}
	return c, nil
}

// values are the RFM features of an entity of state st whose recomputed
// values are vals, as the stream writes them (nil for no score, no group).
func (c *rfmCheck) values(st *aggregate.State, vals []any) map[string]any {
	out := map[string]any{}
	if st.Empty() {
		for _, n := range c.names {
			out[n] = nil
		}
		return out
	}
	a := rfm.Assign(c.b, c.scores, c.groups, number(vals[c.r]), number(vals[c.f]), number(vals[c.m]))
	score := func(s int) any {
		if s == 0 {
			return nil
		}
		return float64(s)
	}
	out[config.FeatureRFMR], out[config.FeatureRFMF], out[config.FeatureRFMM] = score(a.R), score(a.F), score(a.M)
	out[config.FeatureRFMGroup] = nil
	if a.Group != "" {
		out[config.FeatureRFMGroup] = a.Group
	}
	return out
}

// reason explains an RFM mismatch of a vector computed at updated.
func (c *rfmCheck) reason(updated time.Time) string {
	if updated.Before(c.b.At) {
		return fmt.Sprintf("the vector is older than the boundaries (version %d of %s): the stream's re-score has not reached it yet", c.b.Version, c.b.At.Format(timeLayout))
	}
	return fmt.Sprintf("the values or the boundaries differ: the stream scored with boundaries other than version %d (a re-score in progress?), or applied other events", c.b.Version)
}

func number(v any) float64 {
	if f, ok := v.(float64); ok {
		return f
	}
	return math.NaN()
}
