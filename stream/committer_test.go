package stream

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
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
	refuser := testenv.RefuseCommits(e.emb.Cluster(), e.cfg.Stream.Group, kerr.RebalanceInProgress.Code)
	retries := testutil.ToFloat64(mCommitRetries)

	var recs []*kgo.Record
	for i := range 200 {
		recs = append(recs, eventRecord(t, order(fmt.Sprintf("u%d", i%20), fmt.Sprintf("m%d", i), t0.Add(-time.Hour), 10)))
	}
	e.produce(recs...)
	p := e.processor(Options{}, "")
	e.run(p)
	e.waitCaughtUp(30*time.Second, p)
	if refuser.Refused.Load() == 0 {
		t.Fatal("no offset commit reached the broker while the stream read the records")
	}
	refuser.Refuse.Store(false)
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
	refuser := testenv.RefuseCommits(e.emb.Cluster(), e.cfg.Stream.Group, kerr.NotCoordinator.Code)
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
	refuser.Refuse.Store(false)
	second := e.processor(Options{}, "")
	e.run(second)
	e.waitCaughtUp(30*time.Second, second)
	e.waitGroupProgress(t, 15*time.Second, -1)
}
