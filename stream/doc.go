// Package stream is Pulse's feature processor: the consumer group that reads
// pulse.events, keeps every entity's aggregate state, evaluates segments and
// writes the vectors to the online store. `pulse stream` and `pulse dev` run
// it; its whole life is [Processor.Run].
//
// # Where it sits
//
//	pulse.events ──► task per partition ──► pulse.state      (compacted changelog, transactional)
//	pulse.events.resolved ─┘ Pebble per      pulse.segments (enter/exit, same transaction)
//	                  │      partition       pulse.events.invalid (undecodable, too late)
//	                  │                      pulse.identity.requests, pulse.events.resolved (identity)
//	                  └──────────────────────► featurestore.Store (vectors, memberships)
//
// # Exactly once
//
// A task owns one input partition and one Pebble database under
// <data_dir>/stream/<topic>-<partition>. For each fetched batch it decodes,
// dedupes by messageId, resolves identity, applies the events to the
// entities' aggregate states, evaluates segments (the stages of batch.go,
// over one transaction with one abort path), and then commits in this
// order:
//
//  1. One Kafka transaction (transactional id pulse-stream-<topic>-<p>, so a
//     new owner of the partition fences the old one) holding the changelog
//     records of every changed entity, the dead letters, the segment
//     changes and an `__offset` record with the next input offset.
//  2. The online store write (idempotent): the transaction is committed,
//     so its results may be read, and the local commit that follows stays
//     off the path from an event to its features.
//  3. One Pebble batch with the same states, memberships, timer index,
//     seen message ids and the next input offset, plus the changelog offset
//     of the `__offset` record it mirrors. Written without fsync (synced
//     once a second): the changelog is the durable truth. Then a
//     best-effort commit of the consumer group offset so standard tools
//     show lag, at most every 100 ms and once more as the processor stops
//     (each commit is a write on the broker: one a batch was a fifth of
//     the broker's CPU at a steady 10k events/s). A commit the group refuses, as during a
//     rebalance, is made again a second later, and a task's offset is
//     committed as soon as it opens, so an idle partition's lag does not
//     stay up after its owner changed).
//
// On start a task reads its Pebble meta (next input offset, changelog
// position) and replays the changelog after that position up to a fence
// record it writes itself (read_committed). A crash after 1 and before 3 is
// thus repaired from the changelog, and the store written again for the
// entities of the last transaction (kept as "pending" in its `__offset`
// record, written again on start); a crash before 1 aborts the transaction
// and the input is read again from the Pebble offset. A task that gains a partition
// with no local state restores it all from the changelog. No event is lost
// or counted twice, and each segment change is on pulse.segments once.
//
// With stream.store_write: early the vectors are written to the store
// before step 1, so no Kafka commit lies between an event and its features
// (what a Kafka Streams application writing an external store from its
// processor does). The store then may show a transaction that fails after
// that write until the reopened task's replay (seconds later) writes the
// same entities again; the replay does (the same events, timers, resolved
// records and seeds come again from the committed state). The segment
// member lists' changes still go after the commit: the store keeps those
// lists by the changes it is told, and a replay at a later processing time
// need not make a failed transaction's changes again (a window slid
// meanwhile). A re-score chunk writes only the entities whose group
// changes, and a replay at a later time may find others: it writes the
// store after its commit in both modes. pulse.segments, the member lists,
// the changelog and the state stay exactly once in both modes.
//
// Duplicates are recognised by messageId within a partition (a retry of an
// event carries its key, so it lands on the same partition) for
// stream.allowed_lateness of processing time; the seen ids move with the
// partition through the changelog, in records of at most 512 KB each
// (__seen/<last offset>, then __seen/<last offset>.<part> for the parts
// after the first), so a fetch of a backlog commits in one transaction
// without a record over Kafka's 1 MB. A fetch is cut into more than one
// transaction only when the entity ids it touches pass 768 KB: the
// __offset record lists them.
//
// A task that regains a partition it owned long ago would catch up from its
// old changelog position, which relies on the broker keeping the tombstones
// written since: it removes them delete.retention.ms (a day by default)
// after compacting them, and a deleted entity (a person deleted on request)
// would come back from the old local state. So a local state last brought
// up to date (meta.asOf) more than half the changelog topic's
// delete.retention.ms ago is cleared and the partition restored from the
// whole changelog (task.dropIfStale, pulse_stream_stale_states_total).
//
// Caveats: a build from
// before the seen ids' parts cannot read a __seen/<offset>.<part> key: its
// restore fails while one is within stream.allowed_lateness, so it is no
// version to roll back to until then.
//
// # New features and seeds
//
// A task records, for every feature fingerprint its state has never seen,
// the next input offset as the feature's activation: in Pebble (v/), in
// the changelog (__activation/) and on the activations topic, in one
// transaction, before it processes anything with the feature. A fresh
// partition activates everything at the log's start offset: nothing to
// seed, unless retention deleted events that history still holds.
//
// `pulse backfill features` aggregates the history before each partition's
// activation and sends one seed per entity to the seeds topic, partition p
// for the task of partition p. The timer loop reads the partition's seeds
// (read_committed, from the seeds offset in its meta) and, for each feature
// of a seed cut at the task's activation that the entity has not been
// seeded for, merges the seed's partial state into the entity's
// (aggregate.Merge) and marks the entity seeded for it (z/, __seeded/).
// Merged entities are written like any: vector, segments, timers. The
// states, the marks and the next seeds offset (__seeds, meta) are in one
// transaction and one Pebble batch, so a crash before the transaction
// commits re-reads the seeds, one after it restores them from the
// changelog, and a seed is merged once; a second backfill finds the marks
// and changes nothing. A seed cut elsewhere (the state was wiped, say) is
// ignored.
//
// A duplicate of an event processed before a feature's activation is not
// dropped for that feature alone: whether the seed counted the original
// depends on whether history held the duplicate when the seed was made,
// which the seed tells (its seen offset). Until the entity's seed comes the
// event is kept (x/, __undecided/); the seed settles it: counted if its
// offset is below seen, dropped otherwise. Later duplicates are decided at
// once from the mark, which holds seen.
//
// # Concurrency
//
// The poll loop hands each partition's fetched records to its task's
// worker and fetches on: tasks work in parallel, each at its own pace, and
// a task at most two batches behind holds the loop (backpressure). A batch
// takes up to 100k records, so a backlog is worked off in large batches
// (each entity computed and written once per batch) while a steady flow
// goes in small ones. A failed batch makes its task drop what is queued;
// the loop reopens it from its state and seeks back. A failed commit, of
// a batch or of the timer, resolved or re-score loops, makes the task
// refuse every later commit until then: a commit after one that failed
// past its Kafka transaction would hide that transaction from the reopen.
// Consumer group offsets are committed after the batches, best effort, at
// most every 100 ms.
//
// Dedupe lookups go through a Bloom filter of the seen ids in memory, so
// an id never seen costs no Pebble read.
//
// # Transactions kept open across fetches
//
// With stream.commit_interval (by default 100 ms with store_write: early,
// config.EarlyCommitInterval; else 0) the worker keeps a batch's transaction open
// (task.open) for the fetches that follow, until the interval since its
// first is up (the worker's timer commits it then), until a fetch brings
// resolved records, sends records another task or the linker waits for (a
// merge's link requests, forwarded events: txn.handoff) or would pass the
// transaction's limits, until the resolved loop wants the work lock (it
// nudges the worker, whose commit then carries the resolved records
// pending: rideOpen), or until it fails. Each fetch goes through every stage at once; its Pebble writes go
// into the transaction's indexed batch and every read of the batch path
// goes through it (task.reader), so a fetch sees the earlier ones' seen
// ids, entities, aliases and timers exactly as if they had committed. With
// early store writes each fetch's vectors are written at its end
// (writeEarly). The commit then is the ordinary one for all the fetches:
// one Kafka transaction with every record, one Pebble batch, the store's
// member list changes each with its entity's last vector. The worker holds
// the work lock from the first fetch to the commit, so the timer, resolved
// and re-score paths never see an open transaction (they wait up to the
// interval), and the entity cache holding uncommitted changes is thrown
// away with the task on any failure; a close drops the open transaction,
// as a crash would, and marks the task failed so that nothing commits the
// cache's uncommitted changes.
//
// # A store that loses writes
//
// With a featurestore.Marked store (Redis) every store write of a task sets
// its partition's mark last (a changelog offset: the last committed
// transaction's for an early write, the transaction's own after its
// commit) and answers the mark it replaced. Redis keeps a connection's
// commands in order through replication and restarts, so a mark below the
// one the task last set means the store lost writes since (a failover to a
// replica behind, an older snapshot, a FLUSHALL): the task records that in
// its state (pkStoreRewrite) and its timer loop writes the entities it may
// have lost again with their whole membership (rewriteAll), a chunk at a
// time under the work lock. Which ones: the task remembers its last writes
// (task.recent, their marks and entities, up to maxRecentIDs), so a store
// that kept a mark they reach back past lost at most the entities of the
// writes from that mark on; a store with no mark, a loss older than that,
// or a rewrite found due at the task's open writes every entity and merged
// id of the partition. The mark a task
// last set is kept in its meta, so a loss while it was stopped is found by
// its first write after the restart; a task restored from the changelog
// alone has no mark to compare and finds only the next loss.
//
// # Timers
//
// Each entity's next windowed change (aggregate NextChange) is indexed in
// Pebble as t/<due ms>/<id>. Every stream.timer_interval each task takes
// the due entities, recomputes their vectors and segments, and writes them
// through the same transactional path, so windows slide and time-based
// segments change with no new event. A batch of events first fires what
// is due (up to batchTimers entities, and purges expired seen ids) in its
// own transaction, before its events, as if the timer loop had fired just
// before it: a partition that receives events commits one transaction per
// batch, and its batches never wait for a timer's transaction. The timer
// loop fires the rest, and everything on an idle partition.
//
// The poll loop hands each task its fetched records through a queue of
// queueDepth batches; the task's worker folds whatever waits there into
// the batch it takes (task.fold, up to MaxPollRecords), so records that
// arrived while the task committed go out in one transaction, and a
// loaded partition pays one commit per round, not one per fetch.
//
// # Traits and RFM
//
// After the configured features come the automatic ones (auto.go): each
// predictive trait's score (traits.go: the model package scores the
// vector) and the RFM features (rfm.go). Each RFM group is a segment
// rfm:<group> (config adds them), so its records take the segment path.
// An entity's group, previous group and change time are its RFM record
// (r/, __rfm/), written with the entity when the group changes; its timer
// is also due when its recency passes the next R boundary. Boundaries
// come from the compacted RFM topic (rfm_topic.go): every task publishes
// its partition's summary every refresh and the task of partition 0 the
// merged boundaries, versioned; a task switching to a new version records
// it with a re-score cursor and walks its entities from the cursor in
// chunks of about 10 ms from the timer loop (rfm_rescore.go): each chunk's
// changes and advanced cursor are one Pebble batch, behind one transaction
// when the chunk changed a group, an automatic record or a vector, and
// Pebble only (timers and cursor: local state, meta untouched) when not.
// A batch of events waiting for the task goes before the next chunk, and
// the chunks of all tasks use at most half the cores. A task that opens on
// the state of an older build, which queued a key per entity (q/),
// deletes them and re-scores everyone; a build from before the cursor
// does not know it, so a rollback in the middle of a re-score leaves the
// rest of the partition on the old groups until their next change.
//
// # Identity
//
// With identity.enabled (the default) the stream keeps one profile per
// person, under the person's canonical id (identity package,
// docs/identity.md):
//
//	identify/alias ──resolve──► pulse.identity.requests ──linker──► pulse.identity (links)
//	                                   (1 partition)         │
//	                                                         └──► pulse.events.resolved: move A→U (key A)
//	task of A: retire A (segment exits, state deleted, pointer a/A→U) ──► transfer A's state (key U)
//	task of U: aggregate.Merge into U, segments re-evaluated (each change once)
//	later events of A (key A): the task of A forwards them (key U); a target that moved forwards on
//
// The resolve stage sends each new identify's or alias's link requests
// to the linker in the batch's transaction, and forwards the events of an
// entity with a pointer instead of applying them (counted "forwarded").
// The linker runs beside the task of partition 0 (so one at a time, moved
// with it): it folds the requests in the one order of their partition
// with identity.Graph, its graph rebuilt on open from pulse.identity up to
// fence records it commits first, and writes the links, the moves and the
// refusals (dead letters, reason link_refused) with its next requests
// offset in one transaction. Each task reads its partition of the
// resolved topic in a loop of its own, as records come (as it reads seeds,
// in the timer loop, but without waiting for a tick): moves, transfers
// and forwarded events are applied and committed with the next resolved
// offset (meta, __resolved) in one transaction and one Pebble batch, so a
// crash repeats none and loses none; the pointers are the changelog's
// __alias records. The transaction is the loop's own, or, when a batch of
// events takes the task's work lock first, that batch's: it carries up to
// 64 pending resolved records before its events, so each step of a merge
// waits for one commit under load, not for the batch's and then its own.
// Duplicates are dropped where the event first lands (its key's
// partition), before it is forwarded.
//
// A retired entity's vector stays in the store with the values of no
// events and its CanonicalID (the scorer follows it). A deletion (a
// forget request, from the profile API's DELETE or `pulse delete`) goes
// the same way: the linker drops the person from its graph, tombstones
// its identifiers on pulse.identity and sends a forget per entity of it
// (key: the entity); the entity's task exits it from its segments
// (reason deleted), deletes its state or pointer and its vector
// (featurestore.Update.Delete), and keeps a marker of the deletion's time
// (f/<id>, __forgot/<id>) until the id's next event received after it:
// what was received before the deletion and arrives later is dropped
// (counted "deleted"). The linker and each entity's task record their
// share of the deletion on pulse.deletions (deletion.Record) in the same
// transaction, for the status API. A backfill seed of a moved entity is merged and settled
// apart and sent on to its target as a transfer. With identity.enabled: false, an
// identify records anonymousId → userId in its partition only, as before.
//
// # Config changes
//
// Feature states survive config changes (aggregate keys tiles by feature
// fingerprint). When the segment rules change, every stored entity is put
// on the timer index as due now, so the timer loop re-evaluates all members
// in the background (in bounded chunks); an entity touched by an event
// before that is re-evaluated on touch anyway.
//
// # Log resets
//
// The kfake log of `pulse dev` may be wiped. A task whose stored input
// offset is beyond the partition's end offset, or whose input offsets go
// backwards, logs it, drops the partition's state (locally and, with
// tombstones, in the changelog) and resynchronises from the start. So
// does one whose state names another input topic id than the topic's
// (meta.input, the changelog's __input): the topic was deleted and made
// again under its name, and its new log may already be past the old
// one's offsets, where the offsets alone would skip its first records.
package stream
