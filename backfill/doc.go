// Package backfill replays the history in ClickHouse through the same
// aggregate code the stream runs online: it bootstraps features in the
// online store (Features), builds point-in-time-correct training sets
// (TrainingSet), scores entities in batch (Predict) and measures
// online/offline consistency (Verify).
//
// It is a service: history.Reader below it, featurestore.Store beside it,
// cmd/pulse above it. Events are read per entity in time order, each
// message_id once (history.Reader.EachEntity), holding only what the
// features read: their event names, times and map keys (replayFilter; all
// of an event when a where filter may read anything). Features replays
// on every core.
//
// The point-in-time rule: a feature value "as of T" is aggregate.Values at
// T of a State to which exactly the entity's events with timestamp < T were
// applied. An event at T itself does not count (it could be the label's own
// event), one a millisecond earlier does; windows follow docs/features.md.
//
// Only the user entity's features are replayed: the events table keys
// events by user id, else anonymous id (event.EntityID).
//
// # Identity
//
// With identity resolution on (config identity.enabled, the default), the
// replay resolves ids with the links the stream's linker wrote
// (history.Reader.Links, the identity_links table) by the point-in-time
// rule of docs/identity.md: at time T, a person is every id whose latest
// link at or before T leads to its canonical id, and its features as of T
// merge (aggregate.Merge) the partial States of those ids' events before
// T, as the stream merges a moved id's state into the person's (people,
// partials). TrainingSet applies it per label, Features and Verify as of
// their time: the person is written and checked under its canonical id,
// and a sampled id that was merged is checked as its person. Seeds
// (`pulse backfill features` through the stream) are cut per id and
// partition as before: each id's history goes to the task holding that
// id, which treats a seed of an id that has moved as stream/doc.go says.
//
// # Seeding the stream
//
// Writing vectors to the online store (Features, `-direct`) is undone by a
// running stream: the next event of a user makes it write a vector from
// its own state, which lacks the history of a feature added after the
// events. So `pulse backfill features` seeds the stream's state instead
// (Seeds):
//
//  1. Each stream task records when it first processes a feature (its
//     activation: an input offset of its partition) and publishes it on
//     the activations topic.
//  2. Seeds reads the activations, checks that the history writer's group
//     committed at least that far on every partition, and replays per
//     partition the events with kafka_offset < activation, per entity, with
//     the stream's definitions. It sends one seed per entity to the seeds
//     topic, same partition: the partial State of those features and the
//     cut (aggregate.AppendSeed).
//  3. The task merges a seed into the entity's state once (aggregate.Merge)
//     if it was cut at the task's activation, and writes the vector.
//
// Events before the activation count through the seed, those after through
// the stream, each once. A duplicate (same messageId) straddling the
// activation is the stream's: the seed leaves out messages with a copy in
// [activation, seen), seen being how far history went when the seed was
// made, and says so in the seed; the stream holds the duplicates it meets
// until the entity's seed tells whether the original was counted. An empty
// seed goes to every entity with events in [activation, seen) so that
// each such entity hears it. See stream's package doc for the crash story.
package backfill
