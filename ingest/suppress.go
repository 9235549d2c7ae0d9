package ingest

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/suppression"
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

// Suppressions is ingest's copy of the suppressions topic
// (suppression.Table): the entity ids of the people deleted with
// suppression, whose events ingest drops.
type Suppressions = suppression.Table

// NewSuppressions reads cfg.Kafka.Topics.Suppressions once its Run starts,
// keeping pulse_ingest_suppressed_ids.
func NewSuppressions(cfg *config.Config, log *slog.Logger) *Suppressions {
	return suppression.New(cfg, log, func(n int) { suppressedIDs.Set(float64(n)) })
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
