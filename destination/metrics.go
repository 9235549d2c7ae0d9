package destination

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The metrics every destination has, whatever its sink: the label
// destination is its name (for the segments' own webhooks,
// "webhook:<segment>"); kind, on those that count changes, is segment or
// trait (KindSegment, KindTrait).
var (
	deliveredTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_destination_delivered_total",
		Help: "Changes delivered, by destination and kind (segment, trait).",
	}, []string{"destination", "kind"})
	retriesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_destination_retries_total",
		Help: "Changes tried again after a failed attempt, by destination and kind.",
	}, []string{"destination", "kind"})
	deadLettersTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_destination_dead_letters_total",
		Help: "Changes given up and written to the dead-letter topic, by destination, kind and reason (rejected, retries_exhausted, undecodable).",
	}, []string{"destination", "kind", "reason"})
	lagRecords = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulse_destination_lag_records",
		Help: "Records on the segments (and traits) topic past the destination's committed offsets, by destination.",
	}, []string{"destination"})
	deliverySeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pulse_destination_delivery_seconds",
		Help:    "Time of one delivery attempt (one request with its batch), by destination and kind.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	}, []string{"destination", "kind"})
	pausedGauge = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulse_destination_paused",
		Help: "1 while the destination is paused over the admin API, else 0.",
	}, []string{"destination"})
)
