// Package identity is Pulse's identity resolution, pure: which identifiers
// (userId, anonymousId, previousId, configured trait identifiers such as
// traits.email) belong to one person, and which of them is the person's
// canonical id, the entity id the person's features are kept under. The
// stream's linker and the backfill both use it, so online and offline
// resolve the same way. No I/O, no clocks: every time is an argument.
//
// # Where it sits
//
//	event ──Options.Requests──► Request ──(pulse.identity.requests)──► Graph.Apply ──► Decision
//	                                                                     │ Links  → pulse.identity (compacted), identity_links
//	                                                                     │ Moves  → the stream moves the loser's state into the winner
//	                                                                     └ Refused → pulse.events.invalid with the reason
//
// A Graph folds link requests one at a time, in the order of the single
// requests partition, over a Store (the linker's Pebble state; MemStore in
// tests and the backfill). Each fold is deterministic, so a replay after a
// crash reproduces the same decisions at the same points.
//
// # Model
//
// A Profile is a set of identifiers with one root, its canonical
// identifier; the canonical id is the root's value. An identifier in no
// profile is its own person: its events count under its own value. Linking
// two identifiers of two profiles moves the loser's whole profile into the
// winner's (the stream merges the loser's feature state into the winner's
// and forwards its later events); there is no un-merge.
//
// The winner: the side whose profile holds a userId; when both or neither
// do, the request's To side (the identify's userId, the alias's userId).
//
// # Guards
//
// A request is refused, and nothing changes, when a value is blocked
// (Options.Blocked, case-insensitive), when the merged profile would pass
// MaxAnonymousIDs anonymous ids or MaxIdentifiers identifiers, or when
// both profiles hold a userId, unless it is an alias and MergeKnownUsers
// is set.
//
// # Point in time
//
// A Timeline holds the Link records (what pulse.identity and the
// identity_links table keep) and answers Resolve(id, T): the canonical id
// id counted for at event time T. A training row for U at T includes A's
// events only if A's link to U is at or before T.
package identity
