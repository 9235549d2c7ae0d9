package scorer

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/pulse-rt/pulse/featurestore"
)

var (
	requests = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_scorer_requests_total",
		Help: "HTTP requests by endpoint and status code.",
	}, []string{"endpoint", "code"})
	requestSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pulse_scorer_request_seconds",
		Help:    "Request latency, from the request parsed to the answer written, by endpoint.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
	}, []string{"endpoint"})
	predictions = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_scorer_predictions_total",
		Help: "Predictions answered, by model and whether the model was used (false: the default was answered).",
	}, []string{"model", "model_used"})
	storeSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pulse_scorer_store_seconds",
		Help:    "Online store lookup latency (one GetMany per predict request), by call.",
		Buckets: prometheus.ExponentialBuckets(0.00001, 2, 18),
	}, []string{"call"})
	modelSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pulse_scorer_model_seconds",
		Help:    "Model evaluation time for all the rows of one request, by model.",
		Buckets: prometheus.ExponentialBuckets(0.000001, 2, 18),
	}, []string{"model"})
	logShed = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_scorer_prediction_log_shed_total",
		Help: "Prediction log records dropped because the log queue or the producer's buffer was full.",
	})
	logProduced = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_scorer_prediction_log_records_total",
		Help: "Prediction log records acknowledged by Kafka.",
	})
	logErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_scorer_prediction_log_errors_total",
		Help: "Prediction log records Kafka did not take (after the producer's retries).",
	})
	reloadFailures = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_scorer_model_load_failures_total",
		Help: "Model loads (at start or reload) that failed; the previous version, if any, keeps serving.",
	}, []string{"model"})
	modelInfo = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulse_scorer_model_info",
		Help: "1 for the model version now serving (version is the file's SHA-256 prefix).",
	}, []string{"model", "version", "format"})
)

var getManySeconds = storeSeconds.WithLabelValues("get_many")

// storeCache reads the counts of the store cache of the scorer made last
// (one per process but in tests): a func() featurestore.CacheStats.
var storeCache atomic.Value

func init() {
	for _, c := range []struct {
		name, help string
		count      func(featurestore.CacheStats) uint64
	}{
		{"hits", "Vector lookups answered from the store's in-memory cache (Pebble's row cache, Redis's near cache).",
			func(s featurestore.CacheStats) uint64 { return s.Hits }},
		{"misses", "Vector lookups the store's in-memory cache did not answer (read from Pebble or Redis).",
			func(s featurestore.CacheStats) uint64 { return s.Misses }},
		{"invalidations", "Changed vector keys Redis reported to the near cache (Redis only).",
			func(s featurestore.CacheStats) uint64 { return s.Invalidations }},
		{"flushes", "Times the near cache was emptied: its tracking connection lost, or the database flushed (Redis only).",
			func(s featurestore.CacheStats) uint64 { return s.Flushes }},
	} {
		promauto.NewCounterFunc(prometheus.CounterOpts{
			Name: "pulse_scorer_store_cache_" + c.name + "_total",
			Help: c.help,
		}, func() float64 {
			f, _ := storeCache.Load().(func() featurestore.CacheStats)
			if f == nil {
				return 0
			}
			return float64(c.count(f()))
		})
	}
}
