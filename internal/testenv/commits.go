package testenv

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// CommitRefuser makes an in-process broker refuse one consumer group's
// offset commits while Refuse is set, answering every partition with an
// error code, as a group coordinator does during a rebalance
// (REBALANCE_IN_PROGRESS) or when it moves (NOT_COORDINATOR).
type CommitRefuser struct {
	Refuse  atomic.Bool
	Refused atomic.Int64 // commit requests refused so far
}

// RefuseCommits starts refusing group's offset commits on c with code;
// other groups' commits, and group's once Refuse is cleared, go through.
func RefuseCommits(c *kfake.Cluster, group string, code int16) *CommitRefuser {
	r := &CommitRefuser{}
	r.Refuse.Store(true)
	c.ControlKey(int16(kmsg.OffsetCommit), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.OffsetCommitRequest)
		if req.Group != group || !r.Refuse.Load() {
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
				sp.ErrorCode = code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		r.Refused.Add(1)
		return resp, nil, true
	})
	return r
}

// WaitCommittedToEnd waits until group's committed offsets on topic reach
// the end of every partition, or fails the test after timeout.
func WaitCommittedToEnd(t testing.TB, cl *kgo.Client, group, topic string, timeout time.Duration) {
	t.Helper()
	adm := kadm.NewClient(cl)
	var committed, end int64
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
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
		if time.Now().After(deadline) {
			t.Fatalf("group %s's offsets on %s add up to %d, the partitions' ends to %d", group, topic, committed, end)
		}
	}
}
