package stream

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The group refuses every offset commit of the stream until it has read
// all the records, as it does while a rebalance is in progress; then no
// more records come. The stream commits the refused offsets again, so the
// group's offsets (what lag tools read) reach the end of every partition.
// Before, a refused commit was taken as done, and an idle partition's lag
// stayed up until more records came (TestIdentitySIGKILLPulseStream once
// waited 90 s for a group whose records were all processed).
func TestCommitterRetriesRefusedCommits(t *testing.T) {
	e := newEnv(t, nil)
	var refuse atomic.Bool
	var refused atomic.Int64
	refuse.Store(true)
	c := e.emb.Cluster()
	c.ControlKey(int16(kmsg.OffsetCommit), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.OffsetCommitRequest)
		if req.Group != e.cfg.Stream.Group || !refuse.Load() {
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
				refused.Add(1)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	retries := testutil.ToFloat64(mCommitRetries)

	var recs []*kgo.Record
	for i := range 200 {
		recs = append(recs, eventRecord(t, order(fmt.Sprintf("u%d", i%20), fmt.Sprintf("m%d", i), t0.Add(-time.Hour), 10)))
	}
	e.produce(recs...)
	p := e.processor(Options{}, "")
	e.run(p)
	e.waitCaughtUp(30*time.Second, p)
	if refused.Load() == 0 {
		t.Fatal("no offset commit reached the broker while the stream read the records")
	}
	refuse.Store(false)
	e.waitGroupProgress(t, 15*time.Second, -1)
	if got := testutil.ToFloat64(mCommitRetries) - retries; got == 0 {
		t.Error("pulse_stream_offset_commit_retries_total did not count the refused commits")
	}
}

// A partition that moves to another member gets its offset committed by
// the new owner as soon as it is restored, not at its first batch: here
// the first member's commits were all refused and no records come after
// it stops, so only the second member's commit at assignment can bring the
// group's offsets to the end.
func TestCommitAtAssignment(t *testing.T) {
	e := newEnv(t, nil)
	var refuse atomic.Bool
	refuse.Store(true)
	c := e.emb.Cluster()
	c.ControlKey(int16(kmsg.OffsetCommit), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.OffsetCommitRequest)
		if req.Group != e.cfg.Stream.Group || !refuse.Load() {
			return nil, nil, false
		}
		c.KeepControl()
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.NotCoordinator.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	var recs []*kgo.Record
	for i := range 200 {
		recs = append(recs, eventRecord(t, order(fmt.Sprintf("u%d", i%20), fmt.Sprintf("m%d", i), t0.Add(-time.Hour), 10)))
	}
	e.produce(recs...)
	first := e.processor(Options{}, "")
	stop := e.run(first)
	e.waitCaughtUp(30*time.Second, first)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	refuse.Store(false)
	second := e.processor(Options{}, "")
	e.run(second)
	e.waitCaughtUp(30*time.Second, second)
	e.waitGroupProgress(t, 15*time.Second, -1)
}
