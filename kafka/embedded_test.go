package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestEmbeddedRetention: the embedded broker (kfake, `pulse dev`) cleans
// its topics as Kafka does. A record older than kafka.retention goes from
// a topic that expires records; a compacted topic keeps every key's latest
// record however old (kfake applied the broker's week to compacted topics
// too: `pulse dev` lost the suppressions, the deletions' audit, identity
// links and changelog records not written again within a week). The old
// and the new record of each topic go in batches of their own: a cleaning
// drops whole batches.
func TestEmbeddedRetention(t *testing.T) {
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	var c config.Kafka
	c.Brokers = emb.Addrs()
	c.Partitions, c.ReplicationFactor = 1, 1
	c.Topics.Named("emb")
	c.Retention = config.Duration(7 * 24 * time.Hour)
	cl, err := kafka.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, cl, c); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-8 * 24 * time.Hour)
	compacted := []string{c.Topics.State, c.Topics.Identity, c.Topics.Suppressions, c.Topics.Deletions, c.Topics.Activations, c.Topics.RFM}
	expiring := []string{c.Topics.Events, c.Topics.Segments, c.Topics.Resolved}
	for _, topic := range append(append([]string{}, compacted...), expiring...) {
		for _, r := range []*kgo.Record{
			{Topic: topic, Key: []byte("old"), Value: []byte("v"), Timestamp: old},
			{Topic: topic, Key: []byte("new"), Value: []byte("v")},
		} {
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	emb.Cluster().ApplyRetention()
	starts, err := kadm.NewClient(cl).ListStartOffsets(ctx, append(append([]string{}, compacted...), expiring...)...)
	if err != nil {
		t.Fatal(err)
	}
	for want, topics := range map[int64][]string{0: compacted, 1: expiring} {
		for _, topic := range topics {
			o, ok := starts.Lookup(topic, 0)
			if !ok || o.Err != nil || o.Offset != want {
				t.Errorf("%s starts at %d (%v), want %d: the record of a week and a day ago %s", topic, o.Offset, o.Err, want,
					map[int64]string{0: "kept (compacted)", 1: "expired"}[want])
			}
		}
	}
}
