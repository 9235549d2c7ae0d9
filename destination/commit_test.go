package destination

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The group refuses the destination's offset commits until every change
// is delivered, as it does during a rebalance, and then no more changes
// come. The runner commits them again, so the group's offsets reach the
// end of the segments topic: before, a refused commit waited for the next
// change, and an idle partition's lag stayed up (and a restart delivered
// its changes again).
func TestRefusedCommitsAreMadeAgain(t *testing.T) {
	rc := newReceiver(t, func(r *http.Request, _ []byte) string { return r.Header.Get(DeliveryHeader) }, nil)
	e := newEnv(t, nil, fmt.Sprintf(`
segments:
  - {name: vip, rule: 'x > 1'}
destinations:
  - {name: hook, type: webhook, url: %q, secret: s3cret, segments: [vip]}
`, rc.srv.URL))
	group := kafka.DestinationGroup("hook")
	var refuse atomic.Bool
	var refused atomic.Int64
	refuse.Store(true)
	c := e.emb.Cluster()
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
	var recs []segment.Record
	for i := range 10 {
		recs = append(recs, change("vip", fmt.Sprintf("u%d", i), true, i, nil))
	}
	e.produce(recs...)
	e.run()
	testenv.WaitFor(t, 30*time.Second, "10 deliveries", func() bool { return len(distinctOK(rc)) == 10 })
	testenv.WaitFor(t, 10*time.Second, "a refused commit", func() bool { return refused.Load() > 0 })
	refuse.Store(false)

	adm := kadm.NewClient(e.cl)
	topic := e.cfg.Kafka.Topics.Segments
	var committed, end int64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ends, err := adm.ListEndOffsets(context.Background(), topic)
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
	t.Fatalf("the group's offsets on %s add up to %d, the partitions' ends to %d", topic, committed, end)
}

// owedCommits keeps the latest record per partition and forgets revoked
// partitions, whose new owner's commits ours must not move back.
func TestOwedCommits(t *testing.T) {
	var o owedCommits
	rec := func(topic string, p int32, off int64) *kgo.Record {
		return &kgo.Record{Topic: topic, Partition: p, Offset: off}
	}
	o.keep([]*kgo.Record{rec("s", 0, 5), rec("s", 0, 3), rec("s", 1, 7), rec("t", 0, 2)})
	o.keep([]*kgo.Record{rec("s", 1, 6)}) // older than the one kept
	o.forget(context.Background(), nil, map[string][]int32{"t": {0}})
	got := map[string]int64{}
	for _, r := range o.records() {
		got[fmt.Sprintf("%s/%d", r.Topic, r.Partition)] = r.Offset
	}
	if want := map[string]int64{"s/0": 5, "s/1": 7}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("owed %v, want %v", got, want)
	}
	o.clear()
	if o.any() {
		t.Fatal("owed after clear")
	}
}
