package rfm

import (
	"bufio"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDefaultGroupsTable checks every R × F cell of the default table
// (testdata/groups.txt), with every M.
func TestDefaultGroupsTable(t *testing.T) {
	f, err := os.Open("testdata/groups.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cells := map[[2]int]bool{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		var r, fq int
		var want string
		if _, err := parseCell(l, &r, &fq, &want); err != nil {
			t.Fatalf("groups.txt:%d: %v", line, err)
		}
		cells[[2]int{r, fq}] = true
		for m := 1; m <= 5; m++ {
			if got := Match(DefaultGroups(), r, fq, m); got != want {
				t.Errorf("groups.txt:%d: r=%d f=%d m=%d: got %q, want %q", line, r, fq, m, got, want)
			}
		}
	}
	if len(cells) != 25 {
		t.Fatalf("groups.txt lists %d cells, want all 25", len(cells))
	}
	if err := CheckGroups(DefaultGroups(), 5); err != nil {
		t.Fatal(err)
	}
	if u := Uncovered(DefaultGroups(), 5); len(u) != 0 {
		t.Fatalf("uncovered cells: %v", u)
	}
	// Non-overlapping: every cell is in exactly one group, so the
	// order of the table does not matter.
	for r := 1; r <= 5; r++ {
		for fq := 1; fq <= 5; fq++ {
			n := 0
			for _, g := range DefaultGroups() {
				if g.Has(r, fq, 1) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("cell r=%d f=%d is in %d groups", r, fq, n)
			}
		}
	}
}

func parseCell(l string, r, f *int, want *string) (int, error) { // "r f -> group"
	lhs, rhs, ok := strings.Cut(l, "->")
	if !ok {
		return 0, strconv.ErrSyntax
	}
	parts := strings.Fields(lhs)
	if len(parts) != 2 {
		return 0, strconv.ErrSyntax
	}
	var err error
	if *r, err = strconv.Atoi(parts[0]); err != nil {
		return 0, err
	}
	if *f, err = strconv.Atoi(parts[1]); err != nil {
		return 0, err
	}
	*want = strings.TrimSpace(rhs)
	return 3, nil
}

func TestCustomGroupsFirstMatchWins(t *testing.T) {
	parse := func(s string) Range {
		r, err := ParseRange(s, 5)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	groups := []Group{
		{Name: "whales", R: parse("*"), F: parse("*"), M: parse("5")},
		{Name: "recent", R: parse("4-5"), F: parse("*"), M: parse("*")},
		{Name: "rest", R: parse("*"), F: parse("*"), M: parse("*")},
	}
	for _, c := range []struct {
		r, f, m int
		want    string
	}{{5, 5, 5, "whales"}, {1, 1, 5, "whales"}, {5, 1, 4, "recent"}, {4, 3, 1, "recent"}, {3, 5, 4, "rest"}} {
		if got := Match(groups, c.r, c.f, c.m); got != c.want {
			t.Errorf("%d,%d,%d: got %q, want %q", c.r, c.f, c.m, got, c.want)
		}
	}
	if err := CheckGroups(groups, 5); err != nil {
		t.Fatal(err)
	}
	shadowed := append(slices.Clone(groups), Group{Name: "never", R: parse("1")})
	if err := CheckGroups(shadowed, 5); err == nil || !strings.Contains(err.Error(), "never matches") {
		t.Fatalf("shadowed group: got %v", err)
	}
	for _, bad := range []string{"0-2", "3-2", "6", "x", "1-x"} {
		if _, err := ParseRange(bad, 5); err == nil {
			t.Errorf("ParseRange(%q) accepted", bad)
		}
	}
	if err := CheckGroups([]Group{{Name: "prospects"}}, 5); err == nil {
		t.Error("a group named prospects was accepted")
	}
	if err := CheckGroups([]Group{{Name: "a"}, {Name: "a", R: parse("1")}}, 5); err == nil {
		t.Error("duplicate names accepted")
	}
}

func TestScores(t *testing.T) {
	cuts := []float64{10, 20, 30, 40}
	for _, c := range []struct {
		v           float64
		high, lower int
	}{{0, 1, 5}, {10, 1, 5}, {10.5, 2, 4}, {20, 2, 4}, {35, 4, 2}, {40, 4, 2}, {41, 5, 1}} {
		if got := ScoreHigher(c.v, cuts); got != c.high {
			t.Errorf("ScoreHigher(%v) = %d, want %d", c.v, got, c.high)
		}
		if got := ScoreLower(c.v, cuts); got != c.lower {
			t.Errorf("ScoreLower(%v) = %d, want %d", c.v, got, c.lower)
		}
	}
	b := &Boundaries{Scores: 5, R: cuts, F: cuts, M: cuts}
	for _, c := range []struct {
		rv, cut float64
		ok      bool
	}{{0, 10, true}, {10, 10, true}, {11, 20, true}, {40, 40, true}, {41, 0, false}} {
		cut, ok := b.NextRecencyCut(c.rv)
		if cut != c.cut || ok != c.ok {
			t.Errorf("NextRecencyCut(%v) = %v %v, want %v %v", c.rv, cut, ok, c.cut, c.ok)
		}
		if ok && ScoreLower(cut+0.5, b.R) != ScoreLower(c.rv, b.R)-1 {
			t.Errorf("passing cut %v does not drop R by one", cut)
		}
	}
}

type numpyCase struct {
	Name   string               `json:"name"`
	Scores int                  `json:"scores"`
	Values map[string][]float64 `json:"values"`
	Cuts   map[string][]float64 `json:"cuts"`
}

func numpyCases(t *testing.T) []numpyCase {
	b, err := os.ReadFile("testdata/quantiles.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Cases []numpyCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Cases) == 0 {
		t.Fatal("no cases in quantiles.json")
	}
	return f.Cases
}

// split deals values at random over parts partitions.
func split(values []float64, parts int, seed uint64) [][]float64 {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([][]float64, parts)
	for _, v := range values {
		p := rng.IntN(parts)
		out[p] = append(out[p], v)
	}
	return out
}

// TestCutsAgainstNumpy: the exact cuts, of one list or of partitions
// merged with every value kept, equal numpy.quantile's within 1e-9
// (relative), the difference being float rounding alone.
func TestCutsAgainstNumpy(t *testing.T) {
	for _, c := range numpyCases(t) {
		for _, d := range []string{"r", "f", "m"} {
			vals := slices.Clone(c.Values[d])
			slices.Sort(vals)
			want := c.Cuts[d]
			check := func(how string, got []float64) {
				t.Helper()
				if len(got) != len(want) {
					t.Fatalf("%s %s %s: %d cuts, want %d", c.Name, d, how, len(got), len(want))
				}
				for i := range got {
					if math.Abs(got[i]-want[i]) > 1e-9*math.Max(1, math.Abs(want[i])) {
						t.Errorf("%s %s %s: cut %d = %v, numpy %v", c.Name, d, how, i, got[i], want[i])
					}
				}
			}
			check("one list", Cuts(vals, c.Scores))
			var parts []Points
			for _, p := range split(c.Values[d], 4, 7) {
				parts = append(parts, Summarize(p, len(c.Values[d])))
			}
			check("merged exact", MergeCuts(parts, c.Scores))
		}
	}
}

// TestSketchRankError: with k points per partition the merged cuts are
// within a fraction 1/k of the population, in rank, of numpy's target rank
// (n-1)q: the tolerance the package documents.
func TestSketchRankError(t *testing.T) {
	for _, k := range []int{16, 64, 256} {
		for _, c := range numpyCases(t) {
			for _, d := range []string{"r", "f", "m"} {
				all := slices.Clone(c.Values[d])
				slices.Sort(all)
				n := float64(len(all))
				var parts []Points
				for _, p := range split(c.Values[d], 4, uint64(k)) {
					parts = append(parts, Summarize(p, k))
				}
				got := MergeCuts(parts, c.Scores)
				for i, cut := range got {
					h := (n - 1) * float64(i+1) / float64(c.Scores)
					// Ranks the value cut occupies in the population.
					lo := float64(sortSearch(all, func(v float64) bool { return v >= cut }))
					hi := float64(sortSearch(all, func(v float64) bool { return v > cut })) - 1
					dist := 0.0
					if h < lo {
						dist = lo - h
					} else if h > hi {
						dist = h - hi
					}
					if dist > n/float64(k)+1 {
						t.Errorf("k=%d %s %s cut %d = %v: rank [%v,%v] is %v ranks from %v (allowed n/k = %.1f)",
							k, c.Name, d, i, cut, lo, hi, dist, h, n/float64(k))
					}
				}
			}
		}
	}
}

func sortSearch(a []float64, f func(float64) bool) int {
	for i, v := range a {
		if f(v) {
			return i
		}
	}
	return len(a)
}

func TestMergeAndEncode(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var sums []*Summary
	for p := range 3 {
		var r, f, m []float64
		for i := range 100 {
			v := float64(p*100 + i)
			r, f, m = append(r, v), append(f, v), append(m, v)
		}
		s := &Summary{Partition: int32(p), R: Summarize(r, 1024), F: Summarize(f, 1024), M: Summarize(m, 1024), At: at}
		back, err := DecodeSummary(s.Encode())
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, back)
	}
	b := Merge(sums, 5, 3, at)
	want := []float64{59.8, 119.6, 179.4, 239.2}
	for i := range want {
		if math.Abs(b.R[i]-want[i]) > 1e-9 {
			t.Fatalf("cuts %v, want %v", b.R, want)
		}
	}
	if !b.Usable() || b.Buyers != 300 || b.Version != 3 {
		t.Fatalf("boundaries %+v", b)
	}
	back, err := DecodeBoundaries(b.Encode())
	if err != nil || !back.SameCuts(b) || back.Version != 3 {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	if empty := Merge(nil, 5, 1, at); empty.Usable() {
		t.Fatal("boundaries of nobody are usable")
	}
}
