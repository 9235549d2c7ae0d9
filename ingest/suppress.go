package ingest

import (
	"context"
	"log/slog"
	"maps"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

var (
	suppressedEvents = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_ingest_suppressed_total",
		Help: "Events dropped because their entity id is suppressed (a person deleted with suppression), answered as accepted.",
	})
	suppressedIDs = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "pulse_ingest_suppressed_ids",
		Help: "Entity ids this ingest drops the events of, as read from the suppressions topic.",
	})
)

// Suppressions is ingest's copy of the suppressions topic: the entity ids
// of the people deleted with suppression (the stream's linker writes them;
// a tombstone lifts one), whose events ingest drops. Like the scorer's
// identity table it reads every partition from the start, read_committed,
// with no consumer group. Lookups read an immutable map swapped on each
// change (changes are rare), so the hot path takes no lock.
type Suppressions struct {
	cfg *config.Config
	log *slog.Logger
	ids atomic.Pointer[map[string]struct{}] // nil: none
}

// NewSuppressions reads cfg.Kafka.Topics.Suppressions once Run starts.
func NewSuppressions(cfg *config.Config, log *slog.Logger) *Suppressions {
	if log == nil {
		log = slog.Default()
	}
	return &Suppressions{cfg: cfg, log: log.With("component", "suppressions")}
}

// Run follows the topic until ctx ends.
func (s *Suppressions) Run(ctx context.Context) error {
	m := map[string]struct{}{}
	return kafka.Follow(ctx, s.cfg.Kafka, s.cfg.Kafka.Topics.Suppressions, s.log, func(fs kgo.Fetches) {
		changed := false
		fs.EachRecord(func(r *kgo.Record) {
			changed = true
			if r.Value == nil {
				delete(m, string(r.Key))
			} else {
				m[string(r.Key)] = struct{}{}
			}
		})
		if changed {
			snap := maps.Clone(m)
			s.ids.Store(&snap)
			suppressedIDs.Set(float64(len(snap)))
		}
	})
}

// Has reports whether entity id is suppressed.
func (s *Suppressions) Has(id []byte) bool {
	if s == nil {
		return false
	}
	m := s.ids.Load()
	if m == nil || len(*m) == 0 {
		return false
	}
	_, ok := (*m)[string(id)]
	return ok
}

// Suppress makes the server drop the events of the entity ids sup holds
// (answered as accepted, counted pulse_ingest_suppressed_total). The
// caller runs sup. Call it before serving.
func (s *Server) Suppress(sup *Suppressions) { s.sup = sup }

// suppressed reports (and counts) whether an event of entity id is dropped.
func (s *Server) suppressed(id []byte) bool {
	if !s.sup.Has(id) {
		return false
	}
	suppressedEvents.Inc()
	return true
}
