package rfm

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Prospects is the group of entities with no order (no recency value).
const Prospects = "prospects"

// SegmentPrefix starts the name of each group's segment: "rfm:champions".
const SegmentPrefix = "rfm:"

// Range is an inclusive range of scores; the zero Range is any score.
type Range struct{ Lo, Hi int }

// Any reports whether r holds every score.
func (r Range) Any() bool { return r.Lo == 0 && r.Hi == 0 }

// Has reports whether score s is in r.
func (r Range) Has(s int) bool { return r.Any() || (s >= r.Lo && s <= r.Hi) }

func (r Range) String() string {
	switch {
	case r.Any():
		return "*"
	case r.Lo == r.Hi:
		return strconv.Itoa(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// ParseRange reads "*" (or ""), "3" or "2-4", within 1..scores.
func ParseRange(s string, scores int) (Range, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "*" {
		return Range{}, nil
	}
	lo, hi, found := strings.Cut(s, "-")
	a, err := strconv.Atoi(strings.TrimSpace(lo))
	if err != nil {
		return Range{}, fmt.Errorf("invalid score range %q (want *, 3 or 2-4)", s)
	}
	b := a
	if found {
		if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil {
			return Range{}, fmt.Errorf("invalid score range %q (want *, 3 or 2-4)", s)
		}
	}
	if a < 1 || b > scores || a > b {
		return Range{}, fmt.Errorf("score range %q must lie within 1-%d, low to high", s, scores)
	}
	return Range{a, b}, nil
}

// Group is one named rectangle of scores.
type Group struct {
	Name    string
	R, F, M Range
}

// Has reports whether scores r, f, m fall in g.
func (g Group) Has(r, f, m int) bool { return g.R.Has(r) && g.F.Has(f) && g.M.Has(m) }

// DefaultScores is the number of scores the default table is written for.
const DefaultScores = 5

// DefaultGroups is the default table (docs/segments.md) for 5 scores:
// the R × F map shops know, M any. Each of the 25 R × F cells is in
// exactly one group.
func DefaultGroups() []Group {
	rg := func(lo, hi int) Range { return Range{lo, hi} }
	return []Group{
		{Name: "champions", R: rg(5, 5), F: rg(4, 5)},
		{Name: "loyal", R: rg(3, 4), F: rg(4, 5)},
		{Name: "potential_loyalist", R: rg(4, 5), F: rg(2, 3)},
		{Name: "new", R: rg(5, 5), F: rg(1, 1)},
		{Name: "promising", R: rg(4, 4), F: rg(1, 1)},
		{Name: "need_attention", R: rg(3, 3), F: rg(3, 3)},
		{Name: "about_to_sleep", R: rg(3, 3), F: rg(1, 2)},
		{Name: "at_risk", R: rg(1, 2), F: rg(3, 4)},
		{Name: "cannot_lose", R: rg(1, 2), F: rg(5, 5)},
		{Name: "hibernating", R: rg(2, 2), F: rg(1, 2)},
		{Name: "lost", R: rg(1, 1), F: rg(1, 2)},
	}
}

// Match returns the name of the first group holding r, f, m, or "" when
// none does.
func Match(groups []Group, r, f, m int) string {
	for i := range groups {
		if groups[i].Has(r, f, m) {
			return groups[i].Name
		}
	}
	return ""
}

var nameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// CheckGroups reports what is wrong with a group table for the given
// number of scores: a bad or duplicate name (or "prospects"), a range
// outside 1..scores, or a group that can never match because groups before
// it cover all its cells.
func CheckGroups(groups []Group, scores int) error {
	if len(groups) == 0 {
		return fmt.Errorf("no groups")
	}
	seen := map[string]bool{}
	for i, g := range groups {
		switch {
		case !nameRE.MatchString(g.Name):
			return fmt.Errorf("group %d: name %q must be lower case letters, digits and _", i, g.Name)
		case g.Name == Prospects:
			return fmt.Errorf("group %d: %q is the group of entities with no order; pick another name", i, g.Name)
		case seen[g.Name]:
			return fmt.Errorf("group %d: duplicate name %q", i, g.Name)
		}
		seen[g.Name] = true
		for _, r := range []Range{g.R, g.F, g.M} {
			if !r.Any() && (r.Lo < 1 || r.Hi > scores || r.Lo > r.Hi) {
				return fmt.Errorf("group %s: range %s outside 1-%d", g.Name, r, scores)
			}
		}
		if !reachable(groups[:i], g, scores) {
			return fmt.Errorf("group %s: never matches, the groups before it cover all its scores", g.Name)
		}
	}
	return nil
}

func reachable(before []Group, g Group, scores int) bool {
	span := func(r Range) (int, int) {
		if r.Any() {
			return 1, scores
		}
		return r.Lo, r.Hi
	}
	r0, r1 := span(g.R)
	f0, f1 := span(g.F)
	m0, m1 := span(g.M)
	for r := r0; r <= r1; r++ {
		for f := f0; f <= f1; f++ {
			for m := m0; m <= m1; m++ {
				if Match(before, r, f, m) == "" {
					return true
				}
			}
		}
	}
	return false
}

// Uncovered lists the score cells "r,f,m" no group matches (entities there
// have no group); empty for a complete table.
func Uncovered(groups []Group, scores int) []string {
	var out []string
	for r := 1; r <= scores; r++ {
		for f := 1; f <= scores; f++ {
			for m := 1; m <= scores; m++ {
				if Match(groups, r, f, m) == "" {
					out = append(out, fmt.Sprintf("%d,%d,%d", r, f, m))
				}
			}
		}
	}
	return out
}
