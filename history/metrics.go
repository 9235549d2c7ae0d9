package history

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	rowsWritten = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_history_rows_written_total",
		Help: "Rows inserted into ClickHouse, by table (replays count again).",
	}, []string{"table"})
	insertSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pulse_history_insert_seconds",
		Help:    "Latency of one successful batch INSERT, by table.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	}, []string{"table"})
	insertRetries = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_history_insert_retries_total",
		Help: "Failed batch INSERTs that the writer retries (ClickHouse down or refusing).",
	})
	unreadable = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_history_unreadable_records_total",
		Help: "Records that could not be decoded, by topic; they go to invalid_events with source history.",
	}, []string{"topic"})
	commitErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_history_commit_errors_total",
		Help: "Offset commits that failed after an insert (the records are replayed and collapse).",
	})
	forgotten = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_history_forgotten_identifiers_total",
		Help: "Identifiers whose rows the writer deleted (the linker's tombstones: people deleted on request; replays count again).",
	})
	consumerLag = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulse_history_lag_records",
		Help: "Records behind the partition's high watermark as of the last fetch, by topic and partition.",
	}, []string{"topic", "partition"})
)
