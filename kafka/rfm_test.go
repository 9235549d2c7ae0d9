package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/rfm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRFMBoundariesReadsNewest: of the boundaries records on the RFM
// topic, the newest version (the later publication of one version) wins,
// whatever their order; summaries and undecodable records are skipped;
// an empty topic has none.
func TestRFMBoundariesReadsNewest(t *testing.T) {
	e, err := StartEmbedded(EmbeddedOptions{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c := config.Kafka{Brokers: e.Addrs()}
	c.Topics.RFM = "pulse.rfm"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := NewClient(c, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: c.Topics.RFM, Key: []byte("summary/0"), Value: []byte("{}")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if b, err := NewestRFMBoundaries(ctx, c); err != nil || b != nil {
		t.Fatalf("with no boundaries: %+v, %v", b, err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	bounds := func(version int64, at time.Time, r0 float64) *rfm.Boundaries {
		return &rfm.Boundaries{Version: version, Scores: 2, R: []float64{r0}, F: []float64{1}, M: []float64{10}, At: at}
	}
	for _, v := range [][]byte{
		bounds(2, at, 20).Encode(),
		bounds(3, at, 30).Encode(),
		[]byte("not json"),
		bounds(3, at.Add(time.Second), 31).Encode(), // same version, published later: wins
		bounds(1, at.Add(time.Hour), 10).Encode(),   // older version, later: does not
		[]byte(`{}`),
	} {
		key := RFMBoundariesKey
		if string(v) == `{}` {
			key = RFMSummaryPrefix + "1"
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: c.Topics.RFM, Key: []byte(key), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := NewestRFMBoundaries(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if b == nil || b.Version != 3 || b.R[0] != 31 {
		t.Fatalf("newest: %+v, want version 3 with r=[31]", b)
	}
}
