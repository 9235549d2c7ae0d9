// Package suppression follows the suppressions topic (pulse.suppressions:
// the entity ids of people deleted with suppression, identity.Suppression
// values keyed by id; a tombstone lifts one) into a table that ingest
// reads on every event (Has: the events of those ids are dropped) and the
// scorer lists (GET /v1/suppressions).
package suppression

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Table is the suppressed entity ids. Like the scorer's identity table it
// reads every partition from the start, read_committed, with no consumer
// group. Lookups read an immutable map swapped on each change (changes are
// rare), so the hot path takes no lock: Table is safe for concurrent use,
// Run writing.
type Table struct {
	cfg     *config.Config
	log     *slog.Logger
	changed func(n int)
	ids     atomic.Pointer[map[string]identity.Suppression] // nil: none
}

// New reads cfg.Kafka.Topics.Suppressions once Run starts; changed, when
// not nil, is told the number of suppressed ids after each change.
func New(cfg *config.Config, log *slog.Logger, changed func(n int)) *Table {
	if log == nil {
		log = slog.Default()
	}
	return &Table{cfg: cfg, log: log.With("component", "suppressions"), changed: changed}
}

// Run follows the topic until ctx ends.
func (t *Table) Run(ctx context.Context) error {
	m := map[string]identity.Suppression{}
	return kafka.Follow(ctx, t.cfg.Kafka, t.cfg.Kafka.Topics.Suppressions, t.log, func(fs kgo.Fetches) {
		changed := false
		fs.EachRecord(func(r *kgo.Record) {
			changed = true
			id := string(r.Key)
			if r.Value == nil {
				delete(m, id)
				return
			}
			var v identity.Suppression
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.log.Warn("an unreadable suppression: kept without its request", "id", id, "err", err)
			}
			m[id] = v
		})
		if changed {
			t.Load(maps.Clone(m))
		}
	})
}

// Load replaces the table with ids (what Run does on each change), which
// it keeps: the caller changes ids no more.
func (t *Table) Load(ids map[string]identity.Suppression) {
	t.ids.Store(&ids)
	if t.changed != nil {
		t.changed(len(ids))
	}
}

// Has reports whether entity id is suppressed (nil t: none is).
func (t *Table) Has(id []byte) bool {
	if t == nil {
		return false
	}
	m := t.ids.Load()
	if m == nil || len(*m) == 0 {
		return false
	}
	_, ok := (*m)[string(id)]
	return ok
}

// Entry is one suppressed entity id, with the deletion that suppressed it.
type Entry struct {
	ID        string    `json:"id"`
	At        time.Time `json:"at,omitzero"`
	RequestID string    `json:"request_id,omitempty"`
}

func entry(id string, v identity.Suppression) Entry {
	return Entry{ID: id, At: v.At.UTC().Truncate(time.Millisecond), RequestID: v.RequestID}
}

// Get is id's suppression; ok is false when id is not suppressed.
func (t *Table) Get(id string) (Entry, bool) {
	if m := t.ids.Load(); m != nil {
		if v, ok := (*m)[id]; ok {
			return entry(id, v), true
		}
	}
	return Entry{}, false
}

// List is every suppressed id, the latest suppressed first.
func (t *Table) List() []Entry {
	m := t.ids.Load()
	if m == nil {
		return []Entry{}
	}
	out := make([]Entry, 0, len(*m))
	for id, v := range *m {
		out = append(out, entry(id, v))
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := b.At.Compare(a.At); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}
