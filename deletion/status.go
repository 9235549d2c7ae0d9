package deletion

import (
	"slices"
	"time"
)

// The states of a deletion (Status.State).
const (
	// StatePending: requested; the linker has not carried it out yet.
	StatePending = "pending"
	// StateInProgress: the person is out of the identity graph; some
	// entities or history rows are still to delete.
	StateInProgress = "in_progress"
	// StateDone: every stage is done.
	StateDone = "done"
)

// Status is one deletion's progress (GET /v1/deletions/{request_id}).
type Status struct {
	RequestID string `json:"request_id"`
	State     string `json:"status"`
	// Of the request: when, by what kind of identifier, suppressing the
	// person's later events or not.
	RequestedAt time.Time `json:"requested_at,omitzero"`
	Kind        string    `json:"kind,omitempty"`
	Suppressed  bool      `json:"suppressed"`
	// What the linker found of the person (0 until it did).
	Identifiers int `json:"identifiers"`
	Entities    int `json:"entities"`
	// The stages: the identity graph (one part), the stream (a part per
	// entity), the history (a part per identifier; nil where Pulse keeps
	// no history).
	Identity Progress  `json:"identity"`
	Stream   Progress  `json:"stream"`
	History  *Progress `json:"history,omitempty"`
	// DoneAt is when the last stage finished (State done).
	DoneAt time.Time `json:"done_at,omitzero"`
}

// Progress is one stage's.
type Progress struct {
	Done      bool      `json:"done"`
	Parts     int       `json:"parts"`
	PartsDone int       `json:"parts_done"`
	At        time.Time `json:"at,omitzero"` // when its last part was done
	// MutationsRunning (history): ClickHouse still runs mutations issued
	// no later than the stage's last part (SettleMutations): the rows are
	// deleted once they finish.
	MutationsRunning bool `json:"mutations_running,omitempty"`
}

// Table holds every deletion's progress as its records are read. It is
// not safe for concurrent use.
type Table struct {
	byID map[string]*progress
}

type progress struct {
	requested, identity *Record
	stream, history     map[int]time.Time
	seen                int64 // the order records came in: the list's order without a request time
}

// NewTable is an empty table.
func NewTable() *Table { return &Table{byID: map[string]*progress{}} }

// Add folds r in. A record read again (a replay after a crash writes the
// same key) changes nothing but its part's time.
func (t *Table) Add(r Record) {
	// Times as the other APIs give them: UTC, to the millisecond.
	r.At, r.RequestedAt = r.At.UTC().Truncate(time.Millisecond), r.RequestedAt.UTC().Truncate(time.Millisecond)
	p := t.byID[r.Request]
	if p == nil {
		p = &progress{seen: int64(len(t.byID))}
		t.byID[r.Request] = p
	}
	switch r.Stage {
	case Requested:
		p.requested = &r
	case Identity:
		p.identity = &r
	case Stream:
		if p.stream == nil {
			p.stream = map[int]time.Time{}
		}
		p.stream[r.Index] = r.At
	case History:
		if p.history == nil {
			p.history = map[int]time.Time{}
		}
		p.history[r.Index] = r.At
	}
}

// Len is the number of deletions in the table.
func (t *Table) Len() int { return len(t.byID) }

// Status is request id's progress; withHistory counts the history stage
// (Pulse writes one). ok is false for a request the table has no record
// of.
func (t *Table) Status(id string, withHistory bool) (s Status, ok bool) {
	p := t.byID[id]
	if p == nil {
		return Status{}, false
	}
	return p.status(id, withHistory), true
}

// Unfinished counts the deletions not done (ClickHouse's mutations aside)
// and gives the request time of the oldest of them that has one, without
// the sort of List.
func (t *Table) Unfinished(withHistory bool) (n int, oldest time.Time) {
	for id, p := range t.byID {
		s := p.status(id, withHistory)
		if s.State == StateDone {
			continue
		}
		n++
		if at := s.RequestedAt; !at.IsZero() && (oldest.IsZero() || at.Before(oldest)) {
			oldest = at
		}
	}
	return n, oldest
}

// List is every deletion's progress, the latest requested first.
func (t *Table) List(withHistory bool) []Status {
	type item struct {
		s    Status
		seen int64
	}
	items := make([]item, 0, len(t.byID))
	for id, p := range t.byID {
		items = append(items, item{p.status(id, withHistory), p.seen})
	}
	slices.SortFunc(items, func(a, b item) int {
		if c := b.s.RequestedAt.Compare(a.s.RequestedAt); c != 0 {
			return c
		}
		return int(b.seen - a.seen)
	})
	out := make([]Status, len(items))
	for i, it := range items {
		out[i] = it.s
	}
	return out
}

func (p *progress) status(id string, withHistory bool) Status {
	s := Status{RequestID: id}
	for _, r := range []*Record{p.requested, p.identity} {
		if r != nil {
			s.RequestedAt, s.Kind, s.Suppressed = r.RequestedAt, r.Kind, r.Suppress
		}
	}
	s.Identity.Parts = 1
	if p.identity != nil {
		s.Identity = Progress{Done: true, Parts: 1, PartsDone: 1, At: p.identity.At}
		s.Identifiers, s.Entities = p.identity.Identifiers, p.identity.Entities
	}
	s.Stream = parts(p.stream, s.Entities, p.identity != nil)
	if withHistory {
		h := parts(p.history, s.Identifiers, p.identity != nil)
		s.History = &h
	}
	s.settle()
	return s
}

// parts is a stage of n parts, of which done holds those done; known: n
// is known (the linker said it).
func parts(done map[int]time.Time, n int, known bool) Progress {
	g := Progress{Parts: n}
	for i, at := range done {
		if i < n || !known {
			g.PartsDone++
			if at.After(g.At) {
				g.At = at
			}
		}
	}
	g.Done = known && g.PartsDone >= n
	return g
}

// settle sets State and DoneAt from the stages.
func (s *Status) settle() {
	s.DoneAt = time.Time{}
	switch {
	case !s.Identity.Done:
		s.State = StatePending
	case s.Stream.Done && (s.History == nil || s.History.Done):
		s.State = StateDone
		s.DoneAt = s.Identity.At
		for _, g := range []*Progress{&s.Stream, s.History} {
			if g != nil && g.At.After(s.DoneAt) {
				s.DoneAt = g.At
			}
		}
	default:
		s.State = StateInProgress
	}
}

// SettleMutations takes into account the ClickHouse mutations still
// running: oldest is the creation time of the oldest one not done (zero:
// none). The history stage is not done while a mutation created no later
// than its last part runs (ClickHouse keeps creation times to the second,
// so one created in the same second is counted too).
func (s *Status) SettleMutations(oldest time.Time) {
	h := s.History
	if h == nil || oldest.IsZero() || !h.Done || oldest.Truncate(time.Second).After(h.At) {
		return
	}
	h.Done, h.MutationsRunning = false, true
	s.settle()
}
