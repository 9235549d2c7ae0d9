package rfm

import "math"

// Assignment is a buyer's or prospect's RFM scores and group: the values
// of the rfm_r, rfm_f, rfm_m and rfm_group features. A score is 0 and the
// group "" when there is none.
type Assignment struct {
	R, F, M int
	Group   string
}

// Assign scores recency, frequency and monetary values with b and names
// the group from groups: [Prospects] when recency is missing (NaN) or
// negative (no order yet), no scores and no group while b cannot score
// with the configured number of scores, else the scores and the first
// group holding them. A missing (NaN) frequency or monetary value counts
// as 0, as a feature with no value does. The stream scores every entity with it, and
// `pulse backfill verify` the offline features.
func Assign(b *Boundaries, scores int, groups []Group, recency, frequency, monetary float64) Assignment {
	if math.IsNaN(recency) || recency < 0 {
		return Assignment{Group: Prospects}
	}
	if !b.Usable() || b.Scores != scores {
		return Assignment{}
	}
	if math.IsNaN(frequency) {
		frequency = 0
	}
	if math.IsNaN(monetary) {
		monetary = 0
	}
	r, f, m := b.Score(recency, frequency, monetary)
	return Assignment{R: r, F: f, M: m, Group: Match(groups, r, f, m)}
}
