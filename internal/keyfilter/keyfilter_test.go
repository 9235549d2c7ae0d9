package keyfilter

import (
	"fmt"
	"testing"
)

func TestNoFalseNegatives(t *testing.T) {
	f := New(0)
	const n = 200_000
	for i := range n {
		f.Add(fmt.Sprintf("id-%d", i))
	}
	for i := range n {
		if !f.MayHave(fmt.Sprintf("id-%d", i)) {
			t.Fatalf("id-%d added but not found", i)
		}
	}
	if !f.Full() {
		t.Errorf("%d ids in %d bits: want a rebuild", n, f.Bits())
	}
	fp := 0
	for i := range 100_000 {
		if f.MayHave(fmt.Sprintf("other-%d", i)) {
			fp++
		}
	}
	// An overfull filter only costs lookups; a sized one few.
	g := New(n)
	for i := range n {
		g.Add(fmt.Sprintf("id-%d", i))
	}
	gfp := 0
	for i := range 100_000 {
		if g.MayHave(fmt.Sprintf("other-%d", i)) {
			gfp++
		}
	}
	if gfp > 500 {
		t.Errorf("sized filter: %d false positives in 100000, want under 0.5%%", gfp)
	}
	t.Logf("false positives in 100000: overfull %d, sized %d", fp, gfp)
}
