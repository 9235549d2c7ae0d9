// Package destination delivers segment changes to the systems where they
// are acted on: the email tool, the CRM, the ad platform. It sits at the
// end of the flow, beside the scorer: the stream writes enter and exit
// records (segment.Record) to pulse.segments; each configured destination
// (config.Destination, `destinations:` in pulse.yaml) reads them in its
// own consumer group, pulse-destination-<name>, and hands those of its
// segments to its Sink.
//
// A Sink is small (sink.go): it delivers a batch and says which changes
// failed and whether a retry may help. One Runner (runner.go) gives every
// sink the same guarantees:
//
//   - at least once: a partition's offset is committed only past changes
//     delivered or dead-lettered, so a crash delivers again; every attempt
//     and every replay carries the same idempotency key, the change_id
//     (Change.Key), for the receiver to dedupe on;
//   - order per entity: an entity's changes are in one partition, and one
//     is sent only once the one before it was delivered or given up;
//   - retries with exponential backoff and equal jitter, longer when the
//     receiver asks (Retry-After), up to the destination's max_retries;
//   - a rate limit per destination, in requests and in changes per second;
//   - what fails for good goes to the dead-letter topic as a DeadLetter
//     with the reason (kafka.DestinationsDeadTopic, pulse.destinations.dead);
//   - pause and resume over the admin API (admin.go);
//   - the same metrics (metrics.go), labelled by destination.
//
// The sinks: Webhook (signed POST of the record, sign.go), SegmentAPI
// (Segment spec "Audience Entered"/"Audience Exited" through /v1/batch),
// HTTP (any JSON API through a text/template) and Kafka (another topic or
// cluster). The segments' own webhooks (segments[].webhook, `pulse
// webhooks`) run on the same Runner, in package webhook.
package destination
