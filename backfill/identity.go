package backfill

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/identity"
)

// people resolves the history's entity ids to persons the way the stream
// does, from the links the linker wrote (history's identity_links, read
// into an identity.Timeline): the point-in-time rule of docs/identity.md.
// At time T, person C is every entity id whose latest link at or before T
// leads to C; C's features as of T are the merge (aggregate.Merge) of the
// partial states of those ids' events before T, as the stream merges a
// moved entity's state into its canonical id's. A nil *people (identity
// off, or no links) makes every id its own person.
type people struct {
	tl *identity.Timeline
	// ever lists, per canonical id, every entity id with a link to it at
	// some time: the candidates of group.
	ever map[string][]string
	// linked holds every entity id with a link.
	linked map[string]bool
}

// loadPeople reads the links when cfg has identity resolution on.
func loadPeople(ctx context.Context, cfg *config.Config, r *history.Reader) (*people, error) {
	if !cfg.Identity.On() {
		return nil, nil
	}
	links, err := r.Links(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot resolve identities: %w", err)
	}
	return newPeople(links), nil
}

func newPeople(links []identity.Link) *people {
	if len(links) == 0 {
		return nil
	}
	p := &people{tl: identity.NewTimeline(links...), ever: map[string][]string{}, linked: map[string]bool{}}
	for _, l := range links {
		id, err := identity.ParseIdentifier(l.Identifier)
		if err != nil || !id.Entity() {
			continue
		}
		p.linked[id.Value] = true
		if !slices.Contains(p.ever[l.CanonicalID], id.Value) {
			p.ever[l.CanonicalID] = append(p.ever[l.CanonicalID], id.Value)
		}
	}
	return p
}

// canonical is the person id's events counted for at time at.
func (p *people) canonical(id string, at time.Time) string {
	if p == nil || !p.linked[id] {
		return id
	}
	return p.tl.Resolve(id, at)
}

// group lists the entity ids whose events count for canonical id c at time
// at, c first when it counts for itself; just c when it has no links.
func (p *people) group(c string, at time.Time) []string {
	if p == nil || (!p.linked[c] && len(p.ever[c]) == 0) {
		return []string{c}
	}
	var out []string
	if p.canonical(c, at) == c {
		out = append(out, c)
	}
	for _, id := range p.ever[c] {
		if id != c && p.canonical(id, at) == c {
			out = append(out, id)
		}
	}
	return out
}

// isGroup reports that canonical id c is a person of more than its own id
// at time at.
func (p *people) isGroup(c string, at time.Time) bool {
	if p == nil {
		return false
	}
	g := p.group(c, at)
	return len(g) != 1 || g[0] != c
}

// partials collects the partial States of a person's entity ids, by a key
// of the caller's (a label, a person), to merge once all are read. Safe
// for concurrent use.
type partials[K comparable] struct {
	set   *aggregate.Set
	mu    sync.Mutex
	parts map[K][][]byte
}

func newPartials[K comparable](set *aggregate.Set) *partials[K] {
	return &partials[K]{set: set, parts: map[K][][]byte{}}
}

// add keeps a copy of st (encoded: compact, and st is reused).
func (ps *partials[K]) add(k K, st *aggregate.State) {
	b := st.AppendBinary(nil)
	ps.mu.Lock()
	ps.parts[k] = append(ps.parts[k], b)
	ps.mu.Unlock()
}

// merged is the merge of k's partial States into a fresh State: what the
// stream holds after moving each of them into the person's.
func (ps *partials[K]) merged(k K) (*aggregate.State, error) {
	dst := ps.set.NewState()
	for _, b := range ps.parts[k] {
		src, err := ps.set.DecodeState(b)
		if err != nil {
			return nil, fmt.Errorf("cannot merge a person's states: %w", err)
		}
		ps.set.MergeAll(dst, src)
	}
	return dst, nil
}
