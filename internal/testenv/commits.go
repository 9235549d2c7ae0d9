package testenv

import (
	"context"
	"fmt"
	"strings"
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
// the end of every partition, or fails the test after timeout saying where
// each partition's committed offset stands and which member owns it.
func WaitCommittedToEnd(t testing.TB, cl *kgo.Client, group, topic string, timeout time.Duration) {
	t.Helper()
	adm := kadm.NewClient(cl)
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		ends, err := adm.ListEndOffsets(context.Background(), topic)
		var offs kadm.OffsetResponses
		if err == nil {
			offs, err = adm.FetchOffsets(context.Background(), group)
		}
		done := err == nil
		ends.Each(func(o kadm.ListedOffset) {
			if c, ok := offs.Lookup(o.Topic, o.Partition); !ok || c.At < o.Offset {
				done = false
			}
		})
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s's offsets on %s did not reach the end in %s (err %v):%s", group, topic, timeout, err, groupState(adm, group, ends, offs))
		}
	}
}

// groupState says, for a test that waited in vain, where each partition's
// committed offset stands against its end and which member owns it.
func groupState(adm *kadm.Client, group string, ends kadm.ListedOffsets, committed kadm.OffsetResponses) string {
	var b strings.Builder
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := committed.Lookup(o.Topic, o.Partition)
		fmt.Fprintf(&b, "\n  %s/%d: end %d, committed %d (%v)", o.Topic, o.Partition, o.Offset, c.At, ok)
	})
	groups, err := adm.DescribeGroups(context.Background(), group)
	if err != nil {
		fmt.Fprintf(&b, "\n  describe group: %v", err)
		return b.String()
	}
	for _, g := range groups {
		fmt.Fprintf(&b, "\n  group %s: state %s, protocol %s, err %v", g.Group, g.State, g.Protocol, g.Err)
		for _, m := range g.Members {
			a, _ := m.Assigned.AsConsumer()
			var parts []int32
			if a != nil {
				for _, t := range a.Topics {
					parts = append(parts, t.Partitions...)
				}
			}
			fmt.Fprintf(&b, "\n    member %s (%s): %v", m.MemberID, m.ClientHost, parts)
		}
	}
	return b.String()
}
