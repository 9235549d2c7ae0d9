package loadtest

import "time"

// Merge adds o's requests, latencies and time to r: the slices of one
// phase run in rounds count as one phase.
func (r *Result) Merge(o *Result) {
	r.Duration += o.Duration
	r.Sent += o.Sent
	r.OK += o.OK
	r.Errors += o.Errors
	r.Dropped += o.Dropped
	r.Items += o.Items
	r.Hist.Merge(o.Hist)
	if r.FirstErr == nil {
		r.FirstErr = o.FirstErr
	}
}

// alternate runs a baseline and a measured target in turns, rounds times,
// each turn a rounds-th of d, and merges each side's turns: a background
// load that comes and goes during the run then weighs on both sides alike,
// so their ratio holds on a noisy machine.
func alternate(rounds int, d time.Duration, base, target func(d time.Duration) *Result) (*Result, *Result) {
	r := alternateN(rounds, d, base, target)
	return r[0], r[1]
}

// alternateN is alternate for any number of sides, run in turn in the
// order given.
func alternateN(rounds int, d time.Duration, sides ...func(d time.Duration) *Result) []*Result {
	rounds = max(rounds, 1)
	slice := d / time.Duration(rounds)
	out := make([]*Result, len(sides))
	for k := range rounds {
		for i, side := range sides {
			r := side(slice)
			if k == 0 {
				out[i] = r
				continue
			}
			out[i].Merge(r)
		}
	}
	return out
}
