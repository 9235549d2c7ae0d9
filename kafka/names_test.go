package kafka

import (
	"testing"

	"github.com/pulse-rt/pulse/config"
)

// TestNames pins the group and topic names defined here: changing one
// strands the committed offsets or the dead letters of a running system.
func TestNames(t *testing.T) {
	if HistoryGroup != "pulse-history" || WebhooksGroup != "pulse-webhooks" {
		t.Errorf("groups %q %q", HistoryGroup, WebhooksGroup)
	}
	var c config.Config
	c.ApplyDefaults()
	if got := WebhooksDeadTopic(c.Kafka); got != "pulse.webhooks.dead" {
		t.Errorf("default webhooks dead topic %q", got)
	}
	c.Kafka.Topics.Segments = "acme.segments"
	if got := WebhooksDeadTopic(c.Kafka); got != "acme.webhooks.dead" {
		t.Errorf("webhooks dead topic of acme.segments: %q", got)
	}
}
