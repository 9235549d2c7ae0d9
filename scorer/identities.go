package scorer

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Identities is the scorer's copy of the identity table (pulse.identity,
// identity.Link records keyed by identifier): each person's identifiers
// with when and by which event they were linked, for GET /v1/profiles.
// (Which person an id's lookups answer is the store's: a merged entity's
// vector names its canonical id, followCanonical.)
//
// Like Live it reads every partition from the start (read_committed, no
// consumer group: each scorer holds the whole table; a compacted topic
// keeps one record per identifier). A link is visible here as soon as the
// linker committed it, a moment before the stream has moved the old id's
// state into the person's. It holds a few hundred bytes per linked
// identifier.
//
// Identities is safe for concurrent use: Run writes, lookups read.
type Identities struct {
	cfg *config.Config
	log *slog.Logger

	mu      sync.RWMutex
	byID    map[string]identity.Link // typed identifier -> its latest link
	members map[string][]string      // canonical id -> typed identifiers
	ready   atomic.Bool
}

var identityLinksRead = promauto.NewCounter(prometheus.CounterOpts{
	Name: "pulse_scorer_identity_links_read_total",
	Help: "Identity links read from the identity topic into the scorer's table.",
})

// NewIdentities reads cfg.Kafka.Topics.Identity once Run starts.
func NewIdentities(cfg *config.Config, log *slog.Logger) *Identities {
	if log == nil {
		log = slog.Default()
	}
	return &Identities{cfg: cfg, log: log.With("component", "identities"), byID: map[string]identity.Link{}, members: map[string][]string{}}
}

// Run reads the identity topic until ctx ends.
func (ids *Identities) Run(ctx context.Context) error {
	return kafka.Follow(ctx, ids.cfg.Kafka, ids.cfg.Kafka.Topics.Identity, ids.log, func(fs kgo.Fetches) {
		fs.EachRecord(ids.add)
		ids.ready.Store(true)
	})
}

// add applies one record: the identifier's latest link replaces its
// previous one; a tombstone removes it; the linker's own records are
// skipped.
func (ids *Identities) add(r *kgo.Record) {
	if !identity.IsLink(r.Key) {
		return // the linker's own records
	}
	key := string(r.Key)
	var l identity.Link
	if r.Value != nil {
		var err error
		if l, err = identity.DecodeLink(r.Value); err != nil {
			ids.log.Warn("skipping an unreadable identity link", "partition", r.Partition, "offset", r.Offset, "err", err)
			return
		}
		key = l.Identifier
	}
	identityLinksRead.Inc()
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if old, ok := ids.byID[key]; ok {
		m := ids.members[old.CanonicalID]
		if i := slices.Index(m, key); i >= 0 {
			m = slices.Delete(m, i, i+1)
		}
		if len(m) == 0 {
			delete(ids.members, old.CanonicalID)
		} else {
			ids.members[old.CanonicalID] = m
		}
		delete(ids.byID, key)
	}
	if r.Value == nil {
		return
	}
	ids.byID[key] = l
	ids.members[l.CanonicalID] = append(ids.members[l.CanonicalID], key)
}

// CanonicalOf is the canonical id of the person the typed identifier is
// linked to; ok is false when it is linked to none.
func (ids *Identities) CanonicalOf(identifier string) (string, bool) {
	if ids == nil {
		return "", false
	}
	ids.mu.RLock()
	defer ids.mu.RUnlock()
	l, ok := ids.byID[identifier]
	return l.CanonicalID, ok
}

// Links lists the identifiers of the person with canonical id c, each with
// its latest link, oldest first; none when c has no links.
func (ids *Identities) Links(c string) []identity.Link {
	if ids == nil {
		return nil
	}
	ids.mu.RLock()
	defer ids.mu.RUnlock()
	out := make([]identity.Link, 0, len(ids.members[c]))
	for _, k := range ids.members[c] {
		out = append(out, ids.byID[k])
	}
	slices.SortFunc(out, func(a, b identity.Link) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		if a.Identifier < b.Identifier {
			return -1
		}
		return 1
	})
	return out
}
