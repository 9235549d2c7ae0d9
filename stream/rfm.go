package stream

import (
	"math"
	"slices"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/rfm"
)

// RFM groups in the stream (see docs/segments.md#rfm-groups).
//
// After the configured features (and the traits), finish computes the
// entity's RFM features with the boundaries the task scores with
// (t.rfmB): rfm_r, rfm_f, rfm_m, rfm_group, then rfm_previous_group and
// rfm_changed_at from the entity's RFM record. Each group is a segment
// rfm:<group> whose rule is rfm_group == "<group>" (config adds them), so
// enter and exit records, the store's memberships, SSE and webhooks come
// from the segment path with no code of their own.
//
// The entity's automatic record (auto.go), part of the entity's value in
// Pebble and the changelog, keeps the group, the previous group and when
// it changed.
//
// Recency worsens with time alone: the entity's timer is due at the
// earliest of its windows' next change and the moment its recency passes
// the next R boundary, so the timer loop moves it to its new group with no
// event (rfmDue).

// rfmSpec is the compiled rfm block.
type rfmSpec struct {
	groups  []rfm.Group
	scores  int
	refresh time.Duration
	// r, f, m are the dimensions' indexes in the feature values.
	r, f, m int
}

func compileRFM(cfg *config.Config, names []string) *rfmSpec {
	rc := cfg.RFM
	if rc == nil || rc.Entity != entity {
		return nil
	}
	groups, _ := rc.Table() // checked by config
	return &rfmSpec{
		groups: groups, scores: rc.Scores, refresh: rc.Refresh.D(),
		r: slices.Index(names, rc.Recency), f: slices.Index(names, rc.Frequency), m: slices.Index(names, rc.Monetary),
	}
}

// number reads a feature value as a number.
func number(v any) (float64, bool) {
	f, ok := v.(float64)
	return f, ok && !math.IsNaN(f)
}

// group is the group of feature values vals under boundaries b, with
// the scores (0 when not scored): rfm.Assign's, and "" for an empty
// state.
func (s *rfmSpec) group(vals []any, empty bool, b *rfm.Boundaries) (g string, r, f, m int) {
	if empty {
		return "", 0, 0, 0
	}
	a := rfm.Assign(b, s.scores, s.groups, value(vals[s.r]), value(vals[s.f]), value(vals[s.m]))
	return a.Group, a.R, a.F, a.M
}

// value is a feature value as rfm.Assign takes it: NaN when not a number.
func value(v any) float64 {
	if f, ok := v.(float64); ok {
		return f
	}
	return math.NaN()
}

// appendRFM appends the RFM features of e to vals, updating rec (the
// entity's automatic record, as it will be written) when the group
// changed.
func (t *task) appendRFM(e *entry, rec *autoRecord, vals []any, now time.Time) []any {
	g, r, f, m := t.p.rfm.group(vals, e.st.Empty(), t.rfmB)
	rec.rfm = [3]uint8{uint8(r), uint8(f), uint8(m)}
	if g != rec.group {
		rec.group, rec.previous, rec.changedAt = g, rec.group, changeTime(e, now).UnixMilli()
	}
	vals = append(vals, scoreValue(r), scoreValue(f), scoreValue(m), stringValue(rec.group), stringValue(rec.previous))
	if rec.changedAt == 0 {
		return append(vals, nil)
	}
	return append(vals, float64(rec.changedAt))
}

// changeTime is when a change of e happened: its cause's time (the
// event's, the timer's due time), else now.
func changeTime(e *entry, now time.Time) time.Time {
	if !e.at.IsZero() {
		return e.at
	}
	return now
}

func scoreValue(s int) any {
	if s == 0 {
		return nil
	}
	return float64(s)
}

func stringValue(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// rfmDue is the earlier of due (0 = none) and when e's recency passes the
// next R boundary. Recency is a feature of `now` (days since the last
// order), so the moment is found by evaluating it at later times
// (aggregate DeriveOne: the recency feature alone): a recency growing by
// one a day (whole days or not) passes it within the day before hi, found
// to the minute (11 evaluations); any other is searched from now.
//
// The moment depends only on the recency feature's inputs (last_order_at,
// say), the boundaries and the cut, so an entity keeps its last search
// (e.rfmSearch) and one whose inputs did not change since, with the same
// cut still ahead (a page view, most events), takes its result instead of
// searching again. That result is the one the search gave then: a moment
// the search found, or one to look again at, early and never late.
func (t *task) rfmDue(e *entry, vals []any, now time.Time, due int64) int64 {
	s, b := t.p.rfm, t.rfmB
	if s == nil || !b.Usable() || e.st.Empty() {
		return due
	}
	rv, ok := number(vals[s.r])
	if !ok || rv < 0 {
		return due
	}
	cut, ok := b.NextRecencyCut(rv)
	if !ok {
		return due
	}
	// Days to go, assuming recency grows by one a day: the crossing is
	// no later than this (a whole-day feature crosses earlier).
	days := math.Floor(cut-rv) + 1
	hi := now.Add(time.Duration(days) * 24 * time.Hour)
	lo := hi.Add(-24 * time.Hour)
	if lo.Before(now) {
		lo = now
	}
	if due != 0 && due <= lo.UnixMilli() {
		return due // the entity is evaluated before: rfmDue runs again then
	}
	features := t.p.features
	inputs := features.Inputs(s.r)
	vals = vals[:len(t.p.featureNames)]
	if m := &e.rfmSearch; m.b == b && m.cut == cut && m.at > now.UnixMilli() && sameInputs(m.in, vals, inputs) {
		return minDue(due, m.at)
	}
	t.rfmSearches++
	passed := func(at time.Time) bool {
		v, ok := number(features.DeriveOne(s.r, vals, at))
		return ok && v > cut
	}
	at := searchCrossing(passed, now, lo, hi)
	m := &e.rfmSearch
	m.b, m.cut, m.at = b, cut, at
	m.in = m.in[:0]
	for _, i := range inputs {
		m.in = append(m.in, vals[i])
	}
	return minDue(due, at)
}

// searchCrossing is when passed becomes true, from now: hi when it is not by
// then (recency does not grow with time as days do: look again then),
// else to the minute between lo (or now, when passed already there) and
// hi.
func searchCrossing(passed func(time.Time) bool, now, lo, hi time.Time) int64 {
	if !passed(hi) {
		return hi.UnixMilli()
	}
	if lo.After(now) && passed(lo) {
		lo = now // faster than a day a day
	}
	for hi.Sub(lo) > time.Minute {
		mid := lo.Add(hi.Sub(lo) / 2)
		if passed(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi.UnixMilli()
}

// rfmLastSearch is an entity's last search in rfmDue: the moment at that
// its recency passes cut under boundaries b, from the recency inputs in
// (the values of aggregate Inputs).
type rfmLastSearch struct {
	b   *rfm.Boundaries
	cut float64
	at  int64
	in  []any
}

// sameInputs reports whether vals holds the values in at the indexes
// inputs. Only values compared cheaply and exactly (numbers, strings,
// bools, nil) can match: a list or map input searches every time.
func sameInputs(in, vals []any, inputs []int) bool {
	if len(in) != len(inputs) {
		return false
	}
	for k, i := range inputs {
		switch v := vals[i].(type) {
		case nil, float64, string, bool:
			if in[k] != v {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func minDue(due, at int64) int64 {
	if due == 0 || at < due {
		return at
	}
	return due
}
