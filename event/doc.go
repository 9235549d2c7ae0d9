// Package event is the Segment event as Pulse carries it: the type, its
// normalised JSON (the schema of pulse.events), and Decode, which validates
// and normalises what clients send (messageId, skew-corrected timestamps,
// size limits) with errors that name the field and the reason.
//
// It sits at the bottom of Pulse: ingest decodes with it, and the stream,
// history and backfill read the same JSON back. Pure: no I/O.
package event
