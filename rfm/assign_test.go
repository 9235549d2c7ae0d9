package rfm

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestAssign runs testdata/assign.txt: values in, scores and group out,
// with the default groups and 5 configured scores.
func TestAssign(t *testing.T) {
	f, err := os.Open("testdata/assign.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b *Boundaries
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if rest, ok := strings.CutPrefix(l, "boundaries "); ok {
			if b, err = parseBoundaries(rest); err != nil {
				t.Fatalf("assign.txt:%d: %v", line, err)
			}
			continue
		}
		lhs, want, ok := strings.Cut(l, "->")
		in := strings.Fields(lhs)
		if !ok || len(in) != 3 {
			t.Fatalf("assign.txt:%d: want \"r f m -> scores group\"", line)
		}
		var v [3]float64
		for i, s := range in {
			if v[i], err = parseValue(s); err != nil {
				t.Fatalf("assign.txt:%d: %v", line, err)
			}
		}
		a := Assign(b, 5, DefaultGroups(), v[0], v[1], v[2])
		group := a.Group
		if group == "" {
			group = "-"
		}
		if got, want := fmt.Sprintf("%d %d %d %s", a.R, a.F, a.M, group), strings.TrimSpace(want); got != want {
			t.Errorf("assign.txt:%d: %s: got %q, want %q", line, lhs, got, want)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

func parseValue(s string) (float64, error) {
	if s == "nan" {
		return math.NaN(), nil
	}
	return strconv.ParseFloat(s, 64)
}

// parseBoundaries reads "scores=N r=a,b f=.. m=.." ("none": nil).
func parseBoundaries(s string) (*Boundaries, error) {
	if s == "none" {
		return nil, nil
	}
	b := &Boundaries{Version: 1}
	for _, kv := range strings.Fields(s) {
		k, v, _ := strings.Cut(kv, "=")
		if k == "scores" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, err
			}
			b.Scores = n
			continue
		}
		var cuts []float64
		for _, c := range strings.Split(v, ",") {
			x, err := strconv.ParseFloat(c, 64)
			if err != nil {
				return nil, err
			}
			cuts = append(cuts, x)
		}
		switch k {
		case "r":
			b.R = cuts
		case "f":
			b.F = cuts
		case "m":
			b.M = cuts
		default:
			return nil, fmt.Errorf("unknown dimension %q", k)
		}
	}
	return b, nil
}
