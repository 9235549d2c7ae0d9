package destination

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
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
	refuser := testenv.RefuseCommits(e.emb.Cluster(), group, kerr.RebalanceInProgress.Code)
	var recs []segment.Record
	for i := range 10 {
		recs = append(recs, change("vip", fmt.Sprintf("u%d", i), true, i, nil))
	}
	e.produce(recs...)
	e.run()
	testenv.WaitFor(t, 30*time.Second, "10 deliveries", func() bool { return len(distinctOK(rc)) == 10 })
	testenv.WaitFor(t, 10*time.Second, "a refused commit", func() bool { return refuser.Refused.Load() > 0 })
	refuser.Refuse.Store(false)
	testenv.WaitCommittedToEnd(t, e.cl, group, e.cfg.Kafka.Topics.Segments, 10*time.Second)
}

// owedCommits keeps the latest record per partition and forgets revoked
// partitions, whose new owner's commits ours must not move back.
func TestOwedCommits(t *testing.T) {
	var o owedCommits
	rec := func(topic string, p int32, off int64) *kgo.Record {
		return &kgo.Record{Topic: topic, Partition: p, Offset: off}
	}
	o.keep([]*kgo.Record{rec("s", 0, 5), rec("s", 0, 3), rec("s", 1, 7), rec("t", 0, 2)}, o.generation())
	o.keep([]*kgo.Record{rec("s", 1, 6)}, o.generation()) // older than the one kept
	gen := o.generation()
	o.forget(context.Background(), nil, map[string][]int32{"t": {0}})
	got := map[string]int64{}
	for _, r := range o.records() {
		got[fmt.Sprintf("%s/%d", r.Topic, r.Partition)] = r.Offset
	}
	if want := map[string]int64{"s/0": 5, "s/1": 7}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("owed %v, want %v", got, want)
	}
	// A commit that failed across a revocation keeps nothing: its
	// records may be of the revoked partitions.
	o.keep([]*kgo.Record{rec("t", 0, 9)}, gen)
	if o.any() {
		t.Fatal("kept a failed commit made before a revocation")
	}
	o.keep([]*kgo.Record{rec("s", 0, 9)}, o.generation())
	o.clear()
	if o.any() {
		t.Fatal("owed after clear")
	}
}
