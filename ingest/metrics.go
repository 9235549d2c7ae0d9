package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/pulse-rt/pulse/event"
)

var (
	requests = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_ingest_requests_total",
		Help: "HTTP requests by endpoint and status code.",
	}, []string{"endpoint", "code"})
	requestSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pulse_ingest_request_seconds",
		Help:    "Request latency, from first byte handled to answer, by endpoint.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
	}, []string{"endpoint"})
	acceptedEvents = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_ingest_events_total",
		Help: "Events accepted (acknowledged by Kafka) by type.",
	}, []string{"type"})
	rejectedEvents = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_ingest_rejected_total",
		Help: "Invalid events sent to the dead-letter topic, by reason (the field at fault, too_large, json).",
	}, []string{"reason"})
	produceSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "pulse_ingest_produce_seconds",
		Help:    "Time from producing a request's records to the broker's last acknowledgement.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
	})
	ackWakeSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name: "pulse_ingest_ack_wake_seconds",
		Help: "Time from the broker's last acknowledgement of a request's records to the request running again to answer: " +
			"the scheduler's delay, which grows when the CPUs are short.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
	})
	normalizeSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "pulse_ingest_normalize_seconds",
		Help:    "Time to decode, validate and normalise a batch request's events.",
		Buckets: prometheus.ExponentialBuckets(0.00001, 2, 16),
	})
	produceErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_ingest_produce_errors_total",
		Help: "Requests answered 503 because Kafka did not take their records.",
	})
	held = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_ingest_held_total",
		Help: "Requests answered 503 without reading them because events could not be kept (the data directory failed its check).",
	})
	requestBytes = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_ingest_request_bytes_total",
		Help: "Request body bytes received, after decompression.",
	})
)

// eventTypes are the types counted in acceptedEvents; a batch counts its
// events locally and adds them once per type.
var eventTypes = [...]event.Type{event.Track, event.Identify, event.Page, event.Screen, event.Group, event.Alias}

var acceptedByType = func() (c [len(eventTypes)]prometheus.Counter) {
	for i, t := range eventTypes {
		c[i] = acceptedEvents.WithLabelValues(string(t))
	}
	return c
}()

func typeIndex(t event.Type) int {
	for i, et := range eventTypes {
		if et == t {
			return i
		}
	}
	return 0
}
