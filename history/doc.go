// Package history keeps Pulse's full history in ClickHouse: the schema, the
// Writer that batches the Kafka topics into it (consumer group pulse-history),
// and the Reader that backfills and training sets replay from.
//
// It sits after the stream in the flow: ingest writes pulse.events, ingest
// and the stream write pulse.events.invalid (event.DeadLetter), the stream
// writes pulse.segments (segment.Record), the scorer writes
// pulse.predictions (model.PredictionRecord), the stream's linker writes
// pulse.identity (identity.Link) and the stream pulse.traits
// (model.TraitScore), and the Writer copies all six into the tables
// events, invalid_events, segment_changes, predictions, identity_links and
// trait_scores, decoding each with its record type's own decoder. The
// Reader gives the backfill the events per entity and the links
// (Reader.Links) its point-in-time identity rule needs, and the scorer's
// profiles a person's recent events and traits (RecentEvents,
// LatestTraits), read on request, never on the predict path.
//
// # Delivery
//
// The Writer commits Kafka offsets only after ClickHouse took the rows, so a
// crash, a rebalance or a ClickHouse outage replays records rather than lose
// them. A replay can insert a row twice; every table is a ReplacingMergeTree
// whose sorting key ends with the row's id (message_id, change_id, uuid),
// so duplicates collapse in background merges. Until they have, readers see
// through them: analysts with FINAL (or uniqExact/argMax over the id), and
// the Reader by dropping repeated message_ids of an entity as it streams.
//
// # ClickHouse versions
//
// The SQL keeps to what Debian's ClickHouse 18.16 (the test server) and
// current releases both accept: MergeTree engines with PARTITION BY/ORDER BY
// clauses, String/Int64/Float64/DateTime/UInt8/Nullable types only (no Bool,
// JSON, DateTime64 or LowCardinality), millisecond times as Int64 next to a
// DateTime that partitions, and a column list in every INSERT. 18.16 has no
// ADD COLUMN IF NOT EXISTS, so migrations compare system.columns with the
// wanted columns and add what is missing.
package history
