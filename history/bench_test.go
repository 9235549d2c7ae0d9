package history

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// benchEvent is a typical tracked event: ~600 bytes of JSON.
func benchEvent(i int) []byte {
	return fmt.Appendf(nil, `{"type":"track","messageId":"bench-%d","userId":"user-%d","event":"Product Viewed","properties":{"product_id":"p-%d","price":%d.99,"currency":"USD","category":"shoes","revenue":%d.5},"context":{"ip":"10.0.%d.%d","userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36","library":{"name":"analytics.js","version":"4.1.0"},"page":{"path":"/products/%d","url":"https://shop.example.com/products/%d"}},"timestamp":"2024-03-01T10:%02d:%02d.%03dZ","receivedAt":"2024-03-01T10:%02d:%02d.%03dZ","sentAt":"2024-03-01T10:%02d:%02d.%03dZ"}`,
		i, i%10000, i%500, i%100, i%50, i%250, i%250, i%500, i%500, (i/60000)%60, (i/1000)%60, i%1000, (i/60000)%60, (i/1000)%60, i%1000, (i/60000)%60, (i/1000)%60, i%1000)
}

// BenchmarkWriter measures the Writer end to end: b.N events already on
// an embedded Kafka topic, timed until ClickHouse holds them all.
//
//	go test -run '^$' -bench 'Writer|RawInsert' -benchtime 200000x ./history
func BenchmarkWriter(b *testing.B) {
	native, _ := testenv.ClickHouse(b)
	db := testenv.ClickHouseDatabase(b)
	k, err := kafka.StartEmbedded(kafka.EmbeddedOptions{Partitions: 4})
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	cfg := benchConfig(native, db, k.Addrs())
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		b.Fatal(err)
	}
	if err := kafka.EnsureTopics(context.Background(), cl, cfg.Kafka); err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		cl.Produce(context.Background(), &kgo.Record{Topic: cfg.Kafka.Topics.Events, Key: fmt.Appendf(nil, "%d", i%10000), Value: benchEvent(i)}, nil)
	}
	if err := cl.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	cl.Close()
	conn, err := Open(cfg.ClickHouse)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if err := Migrate(context.Background(), conn, db); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	start := time.Now()
	w, err := NewWriter(cfg, WriterOptions{}, quiet)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for {
		var n uint64
		if err := conn.QueryRow(context.Background(), "SELECT count() FROM "+db+".events").Scan(&n); err != nil {
			b.Fatal(err)
		}
		if n >= uint64(b.N) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}

// BenchmarkRawInsert is the baseline: the same rows, already in columns,
// sent with clickhouse-go's batch insert in 50k-row batches.
func BenchmarkRawInsert(b *testing.B) {
	native, _ := testenv.ClickHouse(b)
	db := testenv.ClickHouseDatabase(b)
	conn, err := Open(benchConfig(native, db, nil).ClickHouse)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	if err := Migrate(ctx, conn, db); err != nil {
		b.Fatal(err)
	}
	var batches []*eventRows
	for i := 0; i < b.N; i += 50_000 {
		r := &eventRows{}
		for j := i; j < min(i+50_000, b.N); j++ {
			if err := r.addEvent(&kgo.Record{Topic: "e", Value: benchEvent(j)}); err != nil {
				b.Fatal(err)
			}
		}
		batches = append(batches, r)
	}
	b.ResetTimer()
	start := time.Now()
	for _, r := range batches {
		if err := insertColumns(ctx, conn, eventsTable.insertSQL(db), r.columns()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkDecode is the writer's own CPU per event: JSON to columns.
func BenchmarkDecode(b *testing.B) {
	recs := make([]*kgo.Record, 1000)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: "e", Value: benchEvent(i)}
	}
	var r eventRows
	benchRows(b, recs, &r, r.addEvent)
}

// BenchmarkDecodeChange is the writer's CPU per segment change: JSON to
// columns, features kept raw.
func BenchmarkDecodeChange(b *testing.B) {
	recs := make([]*kgo.Record, 1000)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: "s", Value: fmt.Appendf(nil, `{"change_id":"%032x","segment":"big_spenders","entity":"user","id":"user-%d","change":"enter","at":"2024-03-01T10:00:%02d.%03dZ","features":{"spend_30d":%d.5,"orders_7d":%d,"country":"US","last_seen":"2024-03-01T10:00:00Z"}}`,
			i, i, i%60, i%1000, i, i%10)}
	}
	var r segmentRows
	benchRows(b, recs, &r, r.addChange)
}

// benchRows adds recs to rows b.N times in all, resetting every 50,000
// rows as a flush would.
func benchRows(b *testing.B, recs []*kgo.Record, rows batch, add func(*kgo.Record) error) {
	size := 0
	for _, r := range recs {
		size += len(r.Value)
	}
	b.SetBytes(int64(size / len(recs)))
	b.ReportAllocs()
	for i := range b.N {
		if i%50_000 == 0 {
			rows.reset()
		}
		if err := add(recs[i%len(recs)]); err != nil {
			b.Fatal(err)
		}
	}
}
