package identitydb

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/identity"
)

// TestFoldsAsMemStore: random link and deletion requests (users,
// devices, emails, aliases, previous ids, caps reached, deletions) folded
// by identity.Graph over a DB, each decision written to it as the
// linker writes the topic (its links and tombstones), decide
// exactly as over identity.MemStore, with and without the filter of known
// identifiers (built while requests go on); the state closed and opened
// again in the middle goes on the same; and it reads what RestoreMemStore
// rebuilds from the same records.
func TestFoldsAsMemStore(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			dir := t.TempDir()
			opts := identity.DefaultOptions()
			opts.MaxAnonymousIDs, opts.MaxIdentifiers = 4, 7
			opts.MergeKnownUsers = seed%2 == 0
			mem := identity.NewMemStore()
			memGraph := identity.NewGraph(opts, mem)
			st, _, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { st.Close() }()
			var links []identity.Link // the topic, in order
			at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
			open := false // a batch of one to eight requests, as a fold's
			for i := range 600 {
				switch i {
				case 0, 300:
					if i == 300 {
						st.Close()
						if st, _, err = Open(dir, Options{}); err != nil {
							t.Fatal(err)
						}
					}
					// The filter of known identifiers, built in the
					// background while requests go on reading Pebble,
					// then in front of every lookup.
					st.StartFilter()
				case 5, 320:
					if err := st.InstallFilter(true); err != nil || !st.HasFilter() {
						t.Fatalf("no filter installed: %v", err)
					}
				}
				at = at.Add(time.Second)
				q := randomRequest(rng, at, fmt.Sprint("m", i))
				want, err := memGraph.Apply(q)
				if err != nil {
					t.Fatal(err)
				}
				mem.Commit(want)
				if !open {
					st.Begin()
					open = true
				}
				got, err := identity.NewGraph(opts, st).Apply(q)
				if err != nil {
					t.Fatal(err)
				}
				for _, l := range got.Links {
					v, err := identity.EncodeLink(l)
					if err != nil {
						t.Fatal(err)
					}
					if err := st.Apply(l.Identifier, v); err != nil {
						t.Fatal(err)
					}
					links = append(links, l)
				}
				for _, id := range got.Forgotten {
					if err := st.Apply(id.String(), nil); err != nil {
						t.Fatal(err)
					}
					links = append(links, identity.Link{Identifier: id.String()})
				}
				// Committed before the restart, before the filter starts or
				// is installed (between batches, as the linker does), at
				// the end, and at random.
				if slices.Contains([]int{4, 299, 319, 599}, i) || rng.IntN(4) == 0 {
					if err := st.Commit(Meta{Next: int64(i + 1)}); err != nil {
						t.Fatal(err)
					}
					open = false
				}
				if a, b := decisionOf(want), decisionOf(got); !reflect.DeepEqual(a, b) {
					t.Fatalf("request %d %+v:\nover MemStore %+v\nover the state %+v", i, q, a, b)
				}
			}
			restored, err := identity.RestoreMemStore(links)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range everyIdentifier() {
				r1, ok1, _ := restored.Root(id)
				r2, ok2, err := st.Root(id)
				if err != nil || ok1 != ok2 || r1 != r2 {
					t.Fatalf("%s: root %v %v in the restored MemStore, %v %v %v in the state", id, r1, ok1, r2, ok2, err)
				}
				// The readers beside the writer: the same.
				if c, ok, err := st.Canonical(id.String()); err != nil || ok != ok1 || c != r1.Value {
					t.Fatalf("%s: canonical %q %v %v, want %q %v", id, c, ok, err, r1.Value, ok1)
				}
				if !ok1 {
					continue
				}
				p1, _ := restored.Profile(r1)
				p2, err := st.Profile(r2)
				if err != nil || !reflect.DeepEqual(p1, p2) {
					t.Fatalf("%s: profile %+v restored, %+v %v in the state", r1, p1, p2, err)
				}
				ls, err := st.Links(r1.Value)
				var got, want []string
				for _, l := range ls {
					got = append(got, l.Identifier)
					if l.CanonicalID != r1.Value || (len(got) > 1 && l.At.Before(ls[len(got)-2].At)) {
						t.Fatalf("%s: links %+v: another person's, or not oldest first", r1, ls)
					}
				}
				for _, m := range p1.Members {
					want = append(want, m.ID.String())
				}
				slices.Sort(got)
				if err != nil || !slices.Equal(got, want) {
					t.Fatalf("%s: links of %v %v, want %v", r1, got, err, want)
				}
			}
		})
	}
}

// decisionOf is what a Decision says, members and links as sorted sets
// (a MemStore keeps a profile's members in merge order, the state sorted).
type decisionSummary struct {
	Outcome   identity.Outcome
	Reason    string
	Links     []string
	Moves     []identity.Move
	Forgotten []string
	Deletes   []string
	Canonical string
	Members   []string
}

func decisionOf(d identity.Decision) decisionSummary {
	s := decisionSummary{Outcome: d.Outcome, Reason: d.Reason, Moves: d.Moves}
	for _, l := range d.Links {
		s.Links = append(s.Links, l.Identifier+"→"+l.CanonicalID+" from "+l.Previous)
	}
	for _, id := range d.Forgotten {
		s.Forgotten = append(s.Forgotten, id.String())
	}
	s.Deletes = slices.Clone(d.Deletes)
	if d.Profile != nil {
		s.Canonical = d.Profile.CanonicalID()
		for _, m := range d.Profile.Members {
			s.Members = append(s.Members, m.ID.String())
		}
	}
	for _, l := range [][]string{s.Links, s.Forgotten, s.Deletes, s.Members} {
		slices.Sort(l)
	}
	return s
}

func everyIdentifier() []identity.Identifier {
	var out []identity.Identifier
	for i := range 6 {
		out = append(out, identity.User(fmt.Sprint("u", i)))
	}
	for i := range 14 {
		out = append(out, identity.Anonymous(fmt.Sprint("a", i)))
	}
	for i := range 5 {
		out = append(out, identity.Identifier{Kind: "email", Value: fmt.Sprint("e", i, "@x.com")})
	}
	return out
}

func randomRequest(rng *rand.Rand, at time.Time, msg string) identity.Request {
	user := identity.User(fmt.Sprint("u", rng.IntN(6)))
	anon := identity.Anonymous(fmt.Sprint("a", rng.IntN(14)))
	email := identity.Identifier{Kind: "email", Value: fmt.Sprint("e", rng.IntN(5), "@x.com")}
	q := identity.Request{Kind: identity.KindIdentify, At: at, MessageID: msg}
	switch n := rng.IntN(20); {
	case n < 9:
		q.From, q.To = anon, user
	case n < 12:
		q.From, q.To = email, user
	case n < 14:
		q.From, q.To = identity.User(fmt.Sprint("u", rng.IntN(6))), user
		q.Kind = identity.KindAlias
	case n < 15:
		q.From, q.To = identity.Identifier{Kind: identity.KindPrevious, Value: fmt.Sprint("a", rng.IntN(14))}, user
		q.Kind = identity.KindAlias
	case n < 17:
		q.From, q.To = anon, identity.Anonymous(fmt.Sprint("a", rng.IntN(14)))
	default:
		subject := user
		if rng.IntN(2) == 0 {
			subject = anon
		}
		q = identity.Forget(subject, at, msg)
	}
	return q
}

func TestStale(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	m := Meta{Pos: map[int32]int64{0: 9, 1: 4}, Parts: 2, Topic: "t1", AsOf: now.Add(-time.Hour).UnixMilli()}
	ends := map[int32]int64{0: 20, 1: 5}
	for _, c := range []struct {
		name   string
		topic  string
		ends   map[int32]int64
		keep   time.Duration
		reason string
		old    bool
	}{
		{"current", "t1", ends, 24 * time.Hour, "", false},
		{"another topic", "t2", ends, 24 * time.Hour, "the identity topic is another (recreated)", false},
		{"partitions changed", "t1", map[int32]int64{0: 20, 1: 5, 2: 0}, 24 * time.Hour, "the identity topic's partitions changed", false},
		{"topic behind", "t1", map[int32]int64{0: 20, 1: 4}, 24 * time.Hour, "the identity topic is behind the copy (recreated?)", false},
		{"older than half the tombstones' keep", "t1", ends, 2 * time.Hour, "the copy is 1h0m0s old, the topic keeps tombstones 2h0m0s", true},
		{"within it", "t1", ends, 2*time.Hour + 2*time.Second, "", false},
	} {
		reason, old := Stale(m, c.topic, c.ends, c.keep, now)
		if reason != c.reason || old != c.old {
			t.Errorf("%s: %q %v, want %q %v", c.name, reason, old, c.reason, c.old)
		}
	}
}

// TestApplyRefusesUnreadableLinks: a value Apply cannot read changes
// nothing: the identifier stays its person's, by id and by person.
func TestApplyRefusesUnreadableLinks(t *testing.T) {
	st, _, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, _ := identity.EncodeLink(identity.Link{Identifier: "anonymous_id:a", CanonicalID: "u", At: time.Now(), MessageID: "m", Kind: identity.KindIdentify})
	st.Begin()
	if err := st.Apply("anonymous_id:a", v); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`{`, `{"identifier":"anonymous_id:a"}`} {
		if err := st.Apply("anonymous_id:a", []byte(bad)); err == nil {
			t.Errorf("Apply took %s", bad)
		}
	}
	if err := st.Commit(Meta{}); err != nil {
		t.Fatal(err)
	}
	if c, ok, err := st.Canonical("anonymous_id:a"); c != "u" || !ok || err != nil {
		t.Errorf("canonical: %q %v %v", c, ok, err)
	}
	if ls, err := st.Links("u"); len(ls) != 1 || err != nil {
		t.Errorf("links of u: %+v %v", ls, err)
	}
}
