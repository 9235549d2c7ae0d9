// Package event is the Segment event as Pulse carries it: the type, its
// normalised JSON (the schema of pulse.events), and Decode, which validates
// and normalises what clients send (messageId, skew-corrected timestamps,
// size limits) with errors that name the field and the reason.
//
// Decode and DecodeBatch are the reference: they build the event with
// encoding/json semantics (goccy/go-json). Ingest runs Normalizer instead,
// which reaches the same records several times cheaper through a JSON
// scanner of its own (scan.go): one pass that validates strictly, splits a
// batch into items and finds each item's top-level fields, after which the
// record is written by copying bytes, nested objects as sent. No library
// offers that fused pass without building values, which is why the package
// has a scanner at all. Anything the scanner does not read exactly as
// Decode would goes to Decode; fuzz targets hold the two to the same
// answers.
//
// It sits at the bottom of Pulse: ingest decodes with it, and the stream,
// history and backfill read the same JSON back. Pure: no I/O.
package event
