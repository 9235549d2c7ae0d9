// Package backfill replays the history in ClickHouse through the same
// aggregate code the stream runs online: it bootstraps features in the
// online store (Features), builds point-in-time-correct training sets
// (TrainingSet), scores entities in batch (Predict) and measures
// online/offline consistency (Verify).
//
// It is a service: history.Reader below it, featurestore.Store beside it,
// cmd/pulse above it. Events are read per entity in time order, each
// message_id once (history.Reader.EachEntity).
//
// The point-in-time rule: a feature value "as of T" is aggregate.Values at
// T of a State to which exactly the entity's events with timestamp < T were
// applied. An event at T itself does not count (it could be the label's own
// event), one a millisecond earlier does; windows follow docs/features.md.
//
// Only the user entity's features are replayed: the events table keys
// events by user id, else anonymous id (event.EntityID). Identity stitching
// (alias) is not replayed.
package backfill
