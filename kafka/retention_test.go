package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
)

// TestRetention: on a real broker, kafka.retention is the retention.ms of
// the topics Pulse creates that expire records (not of the compacted
// ones), and a later start with another retention puts the existing
// topics right; with none set, existing topics keep theirs.
func TestRetention(t *testing.T) {
	var c config.Kafka
	c.Brokers = testenv.Kafka(t)
	c.Partitions, c.ReplicationFactor = 1, 1
	c.Topics.Named(testenv.Topic(t, "ret"))
	cl, err := kafka.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	check := func(want map[string]string) {
		t.Helper()
		got := testenv.Retention(t, c.Brokers, c.Topics.Events, c.Topics.Segments, c.Topics.IdentityRequests, c.Topics.State, c.Topics.Deletions)
		for topic, v := range want {
			if got[topic] != v {
				t.Errorf("%s: retention.ms %q, want %q (all: %v)", topic, got[topic], v, got)
			}
		}
	}
	c.Retention = config.Duration(30 * 24 * time.Hour)
	if err := kafka.EnsureTopics(ctx, cl, c); err != nil {
		t.Fatal(err)
	}
	month := "2592000000"
	check(map[string]string{c.Topics.Events: month, c.Topics.Segments: month, c.Topics.IdentityRequests: month,
		c.Topics.State: "default", c.Topics.Deletions: "default"})

	c.Retention = config.Duration(7 * 24 * time.Hour)
	if err := kafka.EnsureTopics(ctx, cl, c); err != nil {
		t.Fatal(err)
	}
	week := "604800000"
	check(map[string]string{c.Topics.Events: week, c.Topics.Segments: week, c.Topics.State: "default"})

	c.Retention = 0
	if err := kafka.EnsureTopics(ctx, cl, c); err != nil {
		t.Fatal(err)
	}
	check(map[string]string{c.Topics.Events: week})
}

// TestDeleteRetention: on a real broker, a compacted topic's
// delete.retention.ms is read as set on the topic, else the broker's
// default (a day); a topic that does not exist is an error.
func TestDeleteRetention(t *testing.T) {
	var c config.Kafka
	c.Brokers = testenv.Kafka(t)
	cl, err := kafka.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	adm := kadm.NewClient(cl)
	compact, hour := "compact", "3600000"
	set, dflt, missing := testenv.Topic(t, "dr-set"), testenv.Topic(t, "dr-default"), testenv.Topic(t, "dr-missing")
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"cleanup.policy": &compact, "delete.retention.ms": &hour}, set); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"cleanup.policy": &compact}, dflt); err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]time.Duration{set: time.Hour, dflt: kafka.DefaultDeleteRetention} {
		var got time.Duration
		// A topic just created may be unknown to the broker answering.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if got, err = kafka.DeleteRetention(ctx, cl, topic); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil || got != want {
			t.Errorf("%s: delete retention %v, %v; want %v", topic, got, err, want)
		}
	}
	if d, err := kafka.DeleteRetention(ctx, cl, missing); err == nil {
		t.Errorf("a missing topic's delete retention: %v, no error", d)
	}
}
