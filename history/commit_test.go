package history

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The group refuses the writer's offset commits until its records are in
// ClickHouse, as it does during a rebalance, and then no more records come.
// The writer commits them again, so the group's offsets reach the end of
// the topic: before, a refused commit waited for the next record, and an
// idle partition's lag stayed up (and a restart replayed its last batch).
func TestWriterCommitsAgainWhenRefused(t *testing.T) {
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	cfg, k := testConfigEmbedded(t, native, db)
	const group = "history-commit-test"
	var refuse atomic.Bool
	var refused atomic.Int64
	refuse.Store(true)
	c := k.Cluster()
	c.ControlKey(int16(kmsg.OffsetCommit), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.OffsetCommitRequest)
		if req.Group != group || !refuse.Load() {
			return nil, nil, false // kfake commits it; this function stays
		}
		c.KeepControl()
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.RebalanceInProgress.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		refused.Add(1)
		return resp, nil, true
	})
	var recs []*kgo.Record
	for i := range 20 {
		recs = append(recs, &kgo.Record{Topic: cfg.Kafka.Topics.Events, Key: []byte(fmt.Sprintf("u%d", i)),
			Value: fmt.Appendf(nil, `{"type":"track","messageId":"m%d","userId":"u%d","event":"Viewed","timestamp":"2024-03-01T10:00:00Z"}`, i, i)})
	}
	produce(t, cfg, recs...)
	startWriter(t, cfg, WriterOptions{Group: group, FlushInterval: 100 * time.Millisecond})
	conn := openTest(t, native)
	waitCount(t, conn, "SELECT count() FROM "+db+".events", 20, 20*time.Second)
	if refused.Load() == 0 {
		t.Fatal("no offset commit reached the broker")
	}
	refuse.Store(false)

	cl, err := kafka.NewClient(cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var committed, end int64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ends, err := adm.ListEndOffsets(context.Background(), cfg.Kafka.Topics.Events)
		if err != nil {
			t.Fatal(err)
		}
		offs, err := adm.FetchOffsets(context.Background(), group)
		if err != nil {
			t.Fatal(err)
		}
		committed, end = 0, 0
		ends.Each(func(o kadm.ListedOffset) {
			end += o.Offset
			if c, ok := offs.Lookup(o.Topic, o.Partition); ok {
				committed += c.At
			}
		})
		if committed == end {
			return
		}
	}
	t.Fatalf("the group's offsets on %s add up to %d, the partitions' ends to %d", cfg.Kafka.Topics.Events, committed, end)
}
