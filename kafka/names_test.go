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
	if got := DestinationGroup("crm"); got != "pulse-destination-crm" {
		t.Errorf("destination group of crm: %q", got)
	}
	var c config.Config
	c.ApplyDefaults()
	if got := WebhooksDeadTopic(c.Kafka); got != "pulse.webhooks.dead" {
		t.Errorf("default webhooks dead topic %q", got)
	}
	if got := DestinationsDeadTopic(c.Kafka); got != "pulse.destinations.dead" {
		t.Errorf("default destinations dead topic %q", got)
	}
	c.Kafka.Topics.Segments = "acme.segments"
	if got := WebhooksDeadTopic(c.Kafka); got != "acme.webhooks.dead" {
		t.Errorf("webhooks dead topic of acme.segments: %q", got)
	}
	if got := DestinationsDeadTopic(c.Kafka); got != "acme.destinations.dead" {
		t.Errorf("destinations dead topic of acme.segments: %q", got)
	}
}
