package history

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestWriterSurvivesBrokerOutage: the only Kafka broker is killed
// (SIGKILL) while the history writer runs, and started again 10 s later
// on the same port and data. The writer does not stop; it resumes on its
// own, and every event, from before the outage and after, is in
// ClickHouse once.
func TestWriterSurvivesBrokerOutage(t *testing.T) {
	k := testenv.StartKafka(t)
	native, _ := testenv.ClickHouse(t)
	cfg := &config.Config{}
	cfg.Kafka.Brokers = []string{k.Addr()}
	cfg.Kafka.Partitions = 2
	cfg.ClickHouse.Addr = native
	cfg.ClickHouse.Database = testenv.ClickHouseDatabase(t)
	cfg.ApplyDefaults()
	cl, err := kafka.NewClient(cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.EnsureTopics(context.Background(), cl, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	startWriter(t, cfg, WriterOptions{BatchRows: 200, FlushInterval: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	events := func(from, to int) []*kgo.Record {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			v := fmt.Sprintf(`{"type":"track","messageId":"b%d","userId":"u%d","event":"e","timestamp":"2024-03-01T10:00:00Z"}`, i, i%50)
			recs = append(recs, &kgo.Record{Topic: cfg.Kafka.Topics.Events, Key: fmt.Appendf(nil, "%d", i%50), Value: []byte(v)})
		}
		return recs
	}
	conn := openTest(t, native)
	count := fmt.Sprintf("SELECT count() FROM %s.events FINAL", cfg.ClickHouse.Database)
	produce(t, cfg, events(0, 1000)...)
	waitCount(t, conn, count, 1000, 30*time.Second)
	if err := k.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Second)
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	produce(t, cfg, events(1000, 2000)...)
	waitCount(t, conn, count, 2000, 60*time.Second)
	waitCount(t, conn, fmt.Sprintf("SELECT uniqExact(message_id) FROM %s.events", cfg.ClickHouse.Database), 2000, time.Second)
}
