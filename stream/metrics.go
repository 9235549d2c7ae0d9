package stream

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	mEvents = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_stream_events_total",
		Help: "Input records by result: applied (folded into a state), ignored (no feature matched), duplicate, late (dead-lettered), invalid (dead-lettered), forwarded (to the canonical id of a merged entity).",
	}, []string{"result"})
	mLag = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulse_stream_lag_records",
		Help: "Records between a partition's high watermark and the next offset the task reads.",
	}, []string{"partition"})
	mBatch = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "pulse_stream_batch_seconds",
		Help:    "Time to process one fetched batch of one partition, from decode to store write (to its early store write when stream.commit_interval keeps its transaction open).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	mBatchSize = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "pulse_stream_batch_records",
		Help:    "Records in one partition batch.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 9),
	})
	mTxnFetches = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "pulse_stream_txn_fetches",
		Help:    "Partition batches one input transaction took (more than one with stream.commit_interval).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10),
	})
	mEventToStore = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "pulse_stream_event_to_store_seconds",
		Help:    "From an event's receivedAt to the store write that made its vector readable.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	mRestoring = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulse_stream_restoring",
		Help: "1 while a partition restores its state from the changelog.",
	}, []string{"partition"})
	mRestored = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_stream_restored_records_total",
		Help: "Changelog records applied while restoring.",
	})
	mSegmentChanges = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_stream_segment_changes_total",
		Help: "Segment enter and exit records written.",
	}, []string{"change"})
	mTimerFires = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_stream_timer_fires_total",
		Help: "Entities recomputed because a window slid (or segment rules changed), with no new event.",
	})
	mResets = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_stream_partition_resets_total",
		Help: "Times a task found its input log reset (offset beyond the end or going back) and resynchronised.",
	})
	mStaleStates = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_stream_stale_states_total",
		Help: "Times a task found its local state older than half the changelog's delete.retention.ms and restored the partition from the whole changelog, or the identity linker its state older than half the identity topic's and read that topic whole.",
	})
	mCommitRetries = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_stream_offset_commit_retries_total",
		Help: "Partitions whose consumer group offset commit the group refused (a rebalance) and that the stream committed again.",
	})
	mTxnRecords = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_stream_txn_records_total",
		Help: "Records the stream's committed transactions wrote, by topic: the changelog (state), segment changes, trait scores, dead letters, identity's topics.",
	}, []string{"topic"})
	mTxnSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "pulse_stream_txn_seconds",
		Help:    "Time to flush and commit one changelog transaction.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	mStateCommit = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pulse_stream_state_commit_seconds",
		Help:    "Time to commit one transaction's Pebble batch to the task's local state, by whether it synced the write-ahead log (once a second).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	}, []string{"synced"})
	mStoreLost = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_stream_store_lost_writes_total",
		Help: "Times a task's store write found the store's mark behind the last one it set: the online store (Redis) lost writes, and the task writes every entity again.",
	})
	mStoreRewritten = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_stream_store_rewritten_entities_total",
		Help: "Entities written to the online store again after it lost writes.",
	})
	mStoreWrite = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "pulse_stream_store_write_seconds",
		Help:    "Time to write one transaction's updates to the online store.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	})
)
