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
	// WebhooksGroup is the webhook service's consumer group.
	WebhooksGroup = "pulse-webhooks"
)

// WebhooksDeadTopic names the topic of webhook deliveries that failed for
// good: the segments topic's prefix with ".webhooks.dead", so the default
// pulse.segments gives pulse.webhooks.dead.
func WebhooksDeadTopic(k config.Kafka) string {
	return strings.TrimSuffix(k.Topics.Segments, ".segments") + ".webhooks.dead"
}
