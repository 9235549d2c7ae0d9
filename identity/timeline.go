package identity

import (
	"slices"
	"strings"
	"time"
)

// Timeline answers where an entity id belonged at a time, from the Link
// records (pulse.identity, the identity_links table) in any order: the
// backfill's point-in-time resolver. Not safe for concurrent Adds.
type Timeline struct {
	byEntity map[string][]Link // sorted by At, then MessageID
}

// NewTimeline returns a Timeline of links.
func NewTimeline(links ...Link) *Timeline {
	tl := &Timeline{byEntity: map[string][]Link{}}
	for _, l := range links {
		tl.Add(l)
	}
	return tl
}

// Add records one link. Links of trait identifiers are kept out: no event
// counts under a trait value; so are tombstones (no CanonicalID: a
// deletion, whose history rows are deleted with it).
func (tl *Timeline) Add(l Link) {
	id, err := ParseIdentifier(l.Identifier)
	if err != nil || !id.Entity() || l.CanonicalID == "" {
		return
	}
	ls := tl.byEntity[id.Value]
	i, _ := slices.BinarySearchFunc(ls, l, func(a, b Link) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return strings.Compare(a.MessageID, b.MessageID)
	})
	tl.byEntity[id.Value] = slices.Insert(ls, i+countEqual(ls[i:], l), l)
}

// countEqual keeps equal links in the order added: after those equal.
func countEqual(ls []Link, l Link) int {
	n := 0
	for n < len(ls) && ls[n].At.Equal(l.At) && ls[n].MessageID == l.MessageID {
		n++
	}
	return n
}

// Resolve returns the canonical id that events of entity at event time t
// count for: the latest link of entity at or before t, followed through
// the canonical ids it names (A → U at t1, U → V at t2: A counts for U
// between t1 and t2, for V from t2). Without a link by then, entity itself.
func (tl *Timeline) Resolve(entity string, t time.Time) string {
	cur := entity
	for range 64 { // a chain is short; a cycle (corrupt input) stops here
		next := tl.at(cur, t)
		if next == cur || next == "" {
			return cur
		}
		cur = next
	}
	return cur
}

// at is the canonical id of the latest link of entity at or before t, ""
// when there is none.
func (tl *Timeline) at(entity string, t time.Time) string {
	ls := tl.byEntity[entity]
	i, _ := slices.BinarySearchFunc(ls, t, func(l Link, t time.Time) int {
		if l.At.After(t) {
			return 1
		}
		return -1
	})
	if i == 0 {
		return ""
	}
	return ls[i-1].CanonicalID
}

// Entities lists the entity ids with links, each once, sorted.
func (tl *Timeline) Entities() []string {
	out := make([]string, 0, len(tl.byEntity))
	for e := range tl.byEntity {
		out = append(out, e)
	}
	slices.Sort(out)
	return out
}

// Owners lists the canonical ids entity counted for at some time since
// its first link (itself excluded), each once, in the order it moved
// through them.
func (tl *Timeline) Owners(entity string) []string {
	var out []string
	for _, l := range tl.byEntity[entity] {
		if c := tl.Resolve(entity, l.At); c != entity && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}
