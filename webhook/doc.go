// Package webhook delivers the segments' own webhooks (`webhook:` under a
// segment in the config; `pulse webhooks`). It is the destination runner
// (package destination) with one webhook route per segment that has one,
// kept in its consumer group of old, pulse-webhooks, with its dead letters
// on pulse.webhooks.dead; the `destinations:` section is the newer way to
// the same sink.
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
