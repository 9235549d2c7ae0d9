package history

import (
	"fmt"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
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
	refuser := testenv.RefuseCommits(k.Cluster(), group, kerr.RebalanceInProgress.Code)
	var recs []*kgo.Record
	for i := range 20 {
		recs = append(recs, &kgo.Record{Topic: cfg.Kafka.Topics.Events, Key: []byte(fmt.Sprintf("u%d", i)),
			Value: fmt.Appendf(nil, `{"type":"track","messageId":"m%d","userId":"u%d","event":"Viewed","timestamp":"2024-03-01T10:00:00Z"}`, i, i)})
	}
	produce(t, cfg, recs...)
	startWriter(t, cfg, WriterOptions{Group: group, FlushInterval: 100 * time.Millisecond})
	conn := openTest(t, native)
	waitCount(t, conn, "SELECT count() FROM "+db+".events", 20, 20*time.Second)
	if refuser.Refused.Load() == 0 {
		t.Fatal("no offset commit reached the broker")
	}
	refuser.Refuse.Store(false)
	cl, err := kafka.NewClient(cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	testenv.WaitCommittedToEnd(t, cl, group, cfg.Kafka.Topics.Events, 10*time.Second)
}
