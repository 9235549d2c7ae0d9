package stream

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
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
	// The batches' commits go at most every commitGap, and the last may
	// still be on its way.
	testenv.WaitFor(t, 10*time.Second, "an offset commit refused", func() bool { return refuser.Refused.Load() > 0 })
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
// group's offsets to the end. That commit is made once the group's offsets
// are fetched: made before, its answer could come while franz-go had no
// session offsets yet, and it logged "received an OffsetCommitResponse
// after our group session has ended" at every restart of `pulse dev`.
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
	warnings := captureWarnings(t)
	second := e.processor(Options{}, "")
	e.run(second)
	e.waitCaughtUp(30*time.Second, second)
	e.waitGroupProgress(t, 15*time.Second, -1)
	for _, w := range warnings() {
		if strings.Contains(w, "session has ended") {
			t.Errorf("warned at the commit at assignment: %s", w)
		}
	}
}

// captureWarnings makes slog's default logger (the Kafka clients' made
// from now on log to it) keep its warnings and errors, as it is restored
// at the test's end; the function returns those so far.
func captureWarnings(t *testing.T) func() []string {
	was := slog.Default()
	h := &warnings{}
	slog.SetDefault(slog.New(h))
	t.Cleanup(func() { slog.SetDefault(was) })
	return func() []string {
		h.mu.Lock()
		defer h.mu.Unlock()
		return slices.Clone(h.got)
	}
}

type warnings struct {
	mu  sync.Mutex
	got []string
}

func (h *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *warnings) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, r.Message)
	return nil
}
func (h *warnings) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *warnings) WithGroup(string) slog.Handler      { return h }

// countCommits counts group's offset commit requests on c (kfake commits
// them as usual).
func countCommits(c *kfake.Cluster, group string) *atomic.Int64 {
	var n atomic.Int64
	c.ControlKey(int16(kmsg.OffsetCommit), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		if kreq.(*kmsg.OffsetCommitRequest).Group == group {
			n.Add(1)
		}
		return nil, nil, false // kfake commits it; this function stays
	})
	return &n
}

// Records that come a few at a time make a batch each, and the committer
// commits the group's offsets at most once a commitGap, not once a batch:
// each commit is a write to __consumer_offsets on the broker. The offsets
// still reach the end. Before, 40 batches made about 40 commits. (The
// bound counts gaps in the time the test took, so a slow machine only
// loosens it.)
func TestCommitterSpacesCommits(t *testing.T) {
	e := newEnv(t, nil)
	commits := countCommits(e.emb.Cluster(), e.cfg.Stream.Group)
	p := e.processor(Options{commitGap: 300 * time.Millisecond}, "")
	e.run(p)
	e.waitCaughtUp(30*time.Second, p)
	start, before := time.Now(), commits.Load()
	batches := samples(mBatch)
	// Until the records made 20 batches (a busy machine folds more of
	// them into one).
	for i := 0; samples(mBatch)-batches < 20; i++ {
		if i == 400 {
			t.Fatalf("400 records made %d batches: the test needs 20", samples(mBatch)-batches)
		}
		e.produce(eventRecord(t, order(fmt.Sprintf("u%d", i%40), fmt.Sprintf("m%d", i), t0.Add(-time.Hour), 10)))
		time.Sleep(25 * time.Millisecond)
	}
	e.waitCaughtUp(30*time.Second, p)
	e.waitGroupProgress(t, 15*time.Second, -1)
	made, elapsed := commits.Load()-before, time.Since(start)
	if most := int64(elapsed/(300*time.Millisecond)) + 2; made > most {
		t.Errorf("%d offset commits in %s, want at most %d (one a commitGap)", made, elapsed.Round(time.Millisecond), most)
	}
}

// The batches written since the committer's last commit are committed as
// the processor stops: with a gap longer than the test, the first batch's
// commit is the last until the stop.
func TestCommitterCommitsAtStop(t *testing.T) {
	e := newEnv(t, nil)
	commits := countCommits(e.emb.Cluster(), e.cfg.Stream.Group)
	p := e.processor(Options{commitGap: time.Hour}, "")
	stop := e.run(p)
	e.produce(eventRecord(t, order("u0", "m0", t0.Add(-time.Hour), 10)))
	e.waitCaughtUp(30*time.Second, p)
	for deadline := time.Now().Add(15 * time.Second); commits.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first batch's offset was not committed")
		}
	}
	first := commits.Load()
	var recs []*kgo.Record
	for i := 1; i <= 40; i++ { // on every partition
		recs = append(recs, eventRecord(t, order(fmt.Sprintf("u%d", i), fmt.Sprintf("m%d", i), t0.Add(-time.Hour), 10)))
	}
	e.produce(recs...)
	e.waitCaughtUp(30*time.Second, p)
	if n := commits.Load(); n != first {
		t.Fatalf("%d offset commits within the gap, want none", n-first)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.waitGroupProgress(t, 15*time.Second, -1)
}
