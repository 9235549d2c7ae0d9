package identity

import (
	"fmt"
	"slices"
	"strings"
	"time"

	json "github.com/goccy/go-json"
)

// The reasons a link is refused (Decision.Reason, the dead letter's
// error and the refusals metric's label).
const (
	ReasonBlocked        = "blocked"
	ReasonCapAnonymous   = "cap_anonymous"
	ReasonCapIdentifiers = "cap_identifiers"
	ReasonKnownUsers     = "known_users_conflict"
)

// Profile is one person: its identifiers, the canonical one (Root)
// included, each with the link that brought it in.
type Profile struct {
	Root    Identifier
	Members []Member
}

// Member is one identifier of a profile and the link that made it one.
type Member struct {
	ID        Identifier
	At        time.Time
	MessageID string
}

// CanonicalID is the entity id the profile's features are kept under.
func (p *Profile) CanonicalID() string { return p.Root.Value }

// count returns how many members have kind k ("" = all).
func (p *Profile) count(k string) int {
	if k == "" {
		return len(p.Members)
	}
	n := 0
	for _, m := range p.Members {
		if m.ID.Kind == k {
			n++
		}
	}
	return n
}

// HasUser reports whether a member is a userId.
func (p *Profile) HasUser() bool { return p.count(KindUser) > 0 }

type wireProfile struct {
	Root    string       `json:"root"`
	Members []wireMember `json:"members"`
}

type wireMember struct {
	ID        string    `json:"id"`
	At        time.Time `json:"at"`
	MessageID string    `json:"message_id,omitempty"`
}

// EncodeProfile is a profile's value in a Store (the linker's state).
func EncodeProfile(p *Profile) ([]byte, error) {
	w := wireProfile{Root: p.Root.String(), Members: make([]wireMember, len(p.Members))}
	for i, m := range p.Members {
		w.Members[i] = wireMember{ID: m.ID.String(), At: m.At, MessageID: m.MessageID}
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("cannot encode profile: %w", err)
	}
	return b, nil
}

// DecodeProfile reads a value written by EncodeProfile.
func DecodeProfile(b []byte) (*Profile, error) {
	var w wireProfile
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("cannot decode profile: %w", err)
	}
	root, err := ParseIdentifier(w.Root)
	if err != nil {
		return nil, fmt.Errorf("cannot decode profile: %w", err)
	}
	p := &Profile{Root: root, Members: make([]Member, len(w.Members))}
	for i, m := range w.Members {
		id, err := ParseIdentifier(m.ID)
		if err != nil {
			return nil, fmt.Errorf("cannot decode profile: %w", err)
		}
		p.Members[i] = Member{ID: id, At: m.At, MessageID: m.MessageID}
	}
	return p, nil
}

// Store is the graph's state: each linked identifier's profile root and
// each root's Profile. Graph.Apply only reads it; the caller writes a
// Decision back (MemStore.Commit shows how).
type Store interface {
	// Root returns the root of the profile id is in; ok is false when it
	// is in none.
	Root(id Identifier) (root Identifier, ok bool, err error)
	// Profile returns the profile of root.
	Profile(root Identifier) (*Profile, error)
}

// Outcome is what a Decision does.
type Outcome string

// The outcomes.
const (
	Linked  Outcome = "link"    // the two are one person now
	NoOp    Outcome = "noop"    // they were already
	Refused Outcome = "refused" // a guard said no (Reason)
	// Forgotten: a KindForget request; the person is deleted.
	Forgotten Outcome = "forget"
)

// Decision is the fold of one Request. For Linked, the caller stores
// Profile under Profile.Root, deletes the profile of Removed (when set)
// and points every Links[i].Identifier to Profile.Root, all at once.
type Decision struct {
	Outcome Outcome
	Reason  string // Refused: one of the Reason constants
	// Request is the request folded, its previous_id read as a kind.
	Request Request
	Profile *Profile
	Removed *Identifier
	// Links are the identifiers whose canonical id changes, in order.
	Links []Link
	// Moves are the entity states the stream merges, in order.
	Moves []Move
	// Forgotten: the identifiers that stop existing (the profile's
	// members, or the request's To alone when it was in none), whose
	// links the caller deletes; Deletes, the stream's entities among
	// them (userId and anonymousId values), whose state goes.
	Forgotten []Identifier
	Deletes   []string
}

// Move says the stream's entity From stops existing: its state merges
// into entity To's and its later events count for To.
type Move struct{ From, To string }

// Graph folds link requests over a Store.
type Graph struct {
	opts  Options
	store Store
}

// NewGraph returns a Graph of store under the rules of o.
func NewGraph(o Options, store Store) *Graph { return &Graph{opts: o, store: store} }

// side is one end of a request: its profile, or a profile of its own
// (fresh) when the identifier is in none.
type side struct {
	p     *Profile
	fresh bool
}

func (g *Graph) side(id Identifier) (side, error) {
	root, ok, err := g.store.Root(id)
	if err != nil {
		return side{}, err
	}
	if !ok {
		return side{p: &Profile{Root: id, Members: []Member{{ID: id}}}, fresh: true}, nil
	}
	p, err := g.store.Profile(root)
	if err != nil {
		return side{}, err
	}
	if p == nil {
		return side{}, fmt.Errorf("identity store: %s points to root %s, which has no profile", id, root)
	}
	return side{p: p}, nil
}

// Apply decides request r. Winner: the side whose profile holds a userId;
// when both or neither do, r.To's. The winner's canonical id stays; the
// loser's identifiers all move into it. Errors are the Store's only.
func (g *Graph) Apply(r Request) (Decision, error) {
	if r.From.Kind == KindPrevious {
		r.From.Kind = KindAnonymous
		if _, ok, err := g.store.Root(User(r.From.Value)); err != nil {
			return Decision{}, err
		} else if ok {
			r.From.Kind = KindUser
		}
	}
	if r.Kind == KindForget {
		return g.forget(r)
	}
	d := Decision{Request: r}
	if g.opts.IsBlocked(r.From.Value) || g.opts.IsBlocked(r.To.Value) {
		d.Outcome, d.Reason = Refused, ReasonBlocked
		return d, nil
	}
	if r.From == r.To {
		d.Outcome = NoOp
		return d, nil
	}
	from, err := g.side(r.From)
	if err != nil {
		return Decision{}, err
	}
	to, err := g.side(r.To)
	if err != nil {
		return Decision{}, err
	}
	if !from.fresh && !to.fresh && from.p.Root == to.p.Root {
		d.Outcome = NoOp
		return d, nil
	}
	win, lose := to, from
	switch fu, tu := from.p.HasUser(), to.p.HasUser(); {
	case fu && tu:
		if r.Kind != KindAlias || !g.opts.MergeKnownUsers {
			d.Outcome, d.Reason = Refused, ReasonKnownUsers
			return d, nil
		}
	case fu:
		win, lose = from, to
	}
	if !win.p.Root.Entity() {
		// Requests always have an entity To and a trait side never holds
		// a user, so a trait identifier cannot win; keep it that way.
		win, lose = lose, win
	}
	if win.p.count(KindAnonymous)+lose.p.count(KindAnonymous) > g.opts.MaxAnonymousIDs {
		d.Outcome, d.Reason = Refused, ReasonCapAnonymous
		return d, nil
	}
	if len(win.p.Members)+len(lose.p.Members) > g.opts.MaxIdentifiers {
		d.Outcome, d.Reason = Refused, ReasonCapIdentifiers
		return d, nil
	}
	g.merge(&d, win, lose)
	return d, nil
}

// merge fills d with the link of lose into win.
func (g *Graph) merge(d *Decision, win, lose side) {
	r := d.Request
	canon := win.p.CanonicalID()
	link := func(id Identifier, prev string) Link {
		return Link{Identifier: id.String(), CanonicalID: canon, Previous: prev, At: r.At, MessageID: r.MessageID, Kind: r.Kind}
	}
	p := &Profile{Root: win.p.Root, Members: make([]Member, 0, len(win.p.Members)+len(lose.p.Members))}
	if win.fresh {
		p.Members = append(p.Members, Member{ID: win.p.Root, At: r.At, MessageID: r.MessageID})
		d.Links = append(d.Links, link(win.p.Root, ""))
	} else {
		p.Members = append(p.Members, win.p.Members...)
	}
	prev := ""
	if !lose.fresh {
		prev = lose.p.CanonicalID()
		root := lose.p.Root
		d.Removed = &root
	}
	for _, m := range lose.p.Members {
		p.Members = append(p.Members, Member{ID: m.ID, At: r.At, MessageID: r.MessageID})
		d.Links = append(d.Links, link(m.ID, prev))
	}
	if from := lose.p.Root; from.Entity() && from.Value != canon {
		d.Moves = append(d.Moves, Move{From: from.Value, To: canon})
	}
	d.Outcome, d.Profile = Linked, p
}

// forget decides a deletion: the profile r.To is in (a userId that is in
// none is tried as the anonymousId of the same value, as entity ids are
// read), every member and entity of it; or r.To alone.
func (g *Graph) forget(r Request) (Decision, error) {
	d := Decision{Request: r, Outcome: Forgotten}
	subject := r.To
	root, ok, err := g.store.Root(subject)
	if err == nil && !ok && subject.Kind == KindUser {
		root, ok, err = g.store.Root(Anonymous(subject.Value))
	}
	if err != nil {
		return Decision{}, err
	}
	if !ok {
		d.Forgotten = []Identifier{subject}
		if subject.Entity() {
			d.Deletes = []string{subject.Value}
		}
		return d, nil
	}
	p, err := g.store.Profile(root)
	if err != nil {
		return Decision{}, err
	}
	if p == nil {
		return Decision{}, fmt.Errorf("identity store: %s points to root %s, which has no profile", subject, root)
	}
	d.Profile, d.Removed = p, &root
	seen := map[string]bool{}
	for _, m := range p.Members {
		d.Forgotten = append(d.Forgotten, m.ID)
		if m.ID.Entity() && !seen[m.ID.Value] {
			seen[m.ID.Value] = true
			d.Deletes = append(d.Deletes, m.ID.Value)
		}
	}
	return d, nil
}

// MemStore is a Store in memory: the backfill's and the tests'.
type MemStore struct {
	roots    map[Identifier]Identifier
	profiles map[Identifier]*Profile
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{roots: map[Identifier]Identifier{}, profiles: map[Identifier]*Profile{}}
}

// Root implements Store.
func (s *MemStore) Root(id Identifier) (Identifier, bool, error) {
	r, ok := s.roots[id]
	return r, ok, nil
}

// Profile implements Store.
func (s *MemStore) Profile(root Identifier) (*Profile, error) { return s.profiles[root], nil }

// Commit writes a Linked or Forgotten decision; others change nothing.
func (s *MemStore) Commit(d Decision) {
	if d.Outcome == Forgotten {
		if d.Removed != nil {
			delete(s.profiles, *d.Removed)
		}
		for _, id := range d.Forgotten {
			delete(s.roots, id)
		}
		return
	}
	if d.Outcome != Linked {
		return
	}
	if d.Removed != nil {
		delete(s.profiles, *d.Removed)
	}
	s.profiles[d.Profile.Root] = d.Profile
	for _, l := range d.Links {
		id, _ := ParseIdentifier(l.Identifier)
		s.roots[id] = d.Profile.Root
	}
}

// Canonical returns the canonical id of an entity id (a userId or
// anonymousId value): its profile's, else the id itself.
func (s *MemStore) Canonical(entity string) string {
	for _, id := range []Identifier{User(entity), Anonymous(entity)} {
		if r, ok := s.roots[id]; ok {
			return r.Value
		}
	}
	return entity
}

// RestoreMemStore rebuilds the graph from the identity table: links in
// the order of the log of each identifier (the latest one of an
// identifier wins; a Link with no CanonicalID is a tombstone, the
// identifier forgotten). Each profile's root is its member whose value is
// the canonical id, a userId before an anonymousId; its members are
// sorted. The linker's Pebble copy of pulse.identity (stream/linker_state.go)
// answers as the MemStore this returns for the same records.
func RestoreMemStore(links []Link) (*MemStore, error) {
	latest := map[Identifier]Link{}
	for _, l := range links {
		id, err := ParseIdentifier(l.Identifier)
		if err != nil {
			return nil, err
		}
		if l.CanonicalID == "" {
			delete(latest, id)
			continue
		}
		latest[id] = l
	}
	byCanon := map[string][]Member{}
	for id, l := range latest {
		byCanon[l.CanonicalID] = append(byCanon[l.CanonicalID], Member{ID: id, At: l.At, MessageID: l.MessageID})
	}
	s := NewMemStore()
	for canon, ms := range byCanon {
		slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.ID.String(), b.ID.String()) })
		root, found := User(canon), false
		for _, m := range ms {
			if m.ID == User(canon) || (!found && m.ID == Anonymous(canon)) {
				root, found = m.ID, true
			}
		}
		if !found {
			return nil, fmt.Errorf("cannot restore identity graph: no member of canonical id %q is its root", canon)
		}
		s.profiles[root] = &Profile{Root: root, Members: ms}
		for _, m := range ms {
			s.roots[m.ID] = root
		}
	}
	return s, nil
}
