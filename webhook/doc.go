// Package webhook delivers segment changes to HTTP endpoints. It sits beside
// the scorer at the end of the flow: the stream writes enter and exit
// records to pulse.segments; this service (consumer group pulse-webhooks)
// POSTs each record of a segment that has a `webhook:` in the config to its
// URL, signed with the segment's secret.
//
// Delivery is at least once: a partition's offsets are committed only after
// each of its records was delivered or dead-lettered, so a crash delivers
// again. Receivers dedupe on the X-Pulse-Delivery header (the record's
// change_id, stable across replays). Failed attempts (network errors,
// timeouts, 408, 429 and 5xx answers) are retried with exponential backoff
// and jitter up to the webhook's max_retries; then, or at once for other 4xx
// answers, the record goes to the dead-letter topic (DeadLetterTopic) with
// the reason.
//
// Signing: X-Pulse-Signature is "sha256=" and the hex HMAC-SHA256, keyed by
// the secret, of the X-Pulse-Timestamp value (Unix seconds), a ".", and the
// raw body. Receivers check it with Verify, which also refuses old
// timestamps so a captured request cannot be replayed later.
package webhook
