// Package ingest is the tracking API: Segment's HTTP API (track, identify,
// page, screen, group, alias, batch, import) and Mage-style feature rows
// (/v1/stream), over fasthttp, into Kafka.
//
// It is the first stage of the flow. A request is validated and normalised
// by event.Normalizer (a batch in one pass over the body, with the rules of
// event.Decode), each event is produced to pulse.events keyed by entity id,
// invalid items go to pulse.events.invalid with their reason, and the client
// hears 200 only after the broker acknowledged every record (idempotent
// producer, acks=all): an acknowledged event is durable.
package ingest
