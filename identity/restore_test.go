package identity

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestRestoreMatchesFold: the graph rebuilt from the links a fold wrote
// (what the linker does after a restart) places every identifier where the
// fold did, and folding on from either gives the same decisions.
func TestRestoreMatchesFold(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 1))
		opts := DefaultOptions()
		opts.MaxAnonymousIDs, opts.MaxIdentifiers, opts.MergeKnownUsers = 4, 6, seed%2 == 0
		id := func() Identifier {
			switch rng.IntN(4) {
			case 0:
				return User(fmt.Sprint("u", rng.IntN(6)))
			case 1:
				return Identifier{"email", fmt.Sprint("e", rng.IntN(4))}
			default:
				return Anonymous(fmt.Sprint("a", rng.IntN(12)))
			}
		}
		req := func(i int) Request {
			k := KindIdentify
			if rng.IntN(4) == 0 {
				k = KindAlias
			}
			return Request{From: id(), To: User(fmt.Sprint("u", rng.IntN(6))), Kind: k, At: time.UnixMilli(int64(rng.IntN(1000))), MessageID: fmt.Sprint("m", i)}
		}
		live := NewMemStore()
		g := NewGraph(opts, live)
		var links []Link
		for i := range 60 {
			d, err := g.Apply(req(i))
			if err != nil {
				t.Fatal(err)
			}
			live.Commit(d)
			links = append(links, d.Links...)
		}
		restored, err := RestoreMemStore(links)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if got, want := dump(restored), dump(live); !slices.Equal(got, want) {
			t.Fatalf("seed %d: restored\n%v\nwant\n%v", seed, got, want)
		}
		g2 := NewGraph(opts, restored)
		for i := 60; i < 90; i++ {
			r := req(i)
			d1, _ := g.Apply(r)
			d2, _ := g2.Apply(r)
			live.Commit(d1)
			restored.Commit(d2)
			if d1.Outcome != d2.Outcome || d1.Reason != d2.Reason || len(d1.Links) != len(d2.Links) || !slices.Equal(d1.Moves, d2.Moves) {
				t.Fatalf("seed %d request %d: live %+v, restored %+v", seed, i, d1, d2)
			}
		}
	}
}

// dump lists each identifier with its profile's root and size.
func dump(s *MemStore) []string {
	var out []string
	for id, root := range s.roots {
		out = append(out, fmt.Sprintf("%s in %s (%d)", id, root, len(s.profiles[root].Members)))
	}
	slices.Sort(out)
	return out
}
