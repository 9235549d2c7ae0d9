package kafka

import (
	"strings"

	"github.com/pulse-rt/pulse/config"
)

// The consumer groups of the services whose groups are not configured (the
// stream's is: config.Stream.Group, default pulse-stream). Each is defined
// here alone; services and their flags take it from here.
const (
	// HistoryGroup is the history writer's consumer group by default.
	// Backfill reads its committed offsets to know how far ClickHouse
	// holds the events.
	HistoryGroup = "pulse-history"
	// WebhooksGroup is the consumer group of the segments' own webhooks
	// (segments[].webhook, `pulse webhooks`).
	WebhooksGroup = "pulse-webhooks"
	// DestinationGroupPrefix starts the consumer group of each configured
	// destination (DestinationGroup).
	DestinationGroupPrefix = "pulse-destination-"
)

// DestinationGroup is the consumer group of the destination named name:
// "pulse-destination-<name>". Each destination has its own, so one that
// is slow, failing or paused holds back no other; renaming a destination
// starts a new group (at the end of the topic).
func DestinationGroup(name string) string { return DestinationGroupPrefix + name }

// WebhooksDeadTopic names the topic of webhook deliveries that failed for
// good: the segments topic's prefix with ".webhooks.dead", so the default
// pulse.segments gives pulse.webhooks.dead.
func WebhooksDeadTopic(k config.Kafka) string {
	return strings.TrimSuffix(k.Topics.Segments, ".segments") + ".webhooks.dead"
}

// DestinationsDeadTopic names the topic of destination deliveries that
// failed for good: the segments topic's prefix with ".destinations.dead",
// so the default pulse.segments gives pulse.destinations.dead.
func DestinationsDeadTopic(k config.Kafka) string {
	return strings.TrimSuffix(k.Topics.Segments, ".segments") + ".destinations.dead"
}
