package importer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/importer"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// benchRows is the size of the orders file each iteration imports.
const benchRows = 50_000

// BenchmarkImportCSV imports an orders CSV of benchRows rows into kfake
// (read, map, event.Decode, encode, produce with acks), beside a raw
// franz-go produce of the same records with the same producer options:
// the cost of Kafka alone in this run.
func BenchmarkImportCSV(b *testing.B) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "pulse.events", "pulse.events.invalid"))
	if err != nil {
		b.Fatal(err)
	}
	defer cluster.Close()
	var sb strings.Builder
	sb.WriteString("order_id,customer_id,total,coupon,created_at\n")
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < benchRows; i++ {
		fmt.Fprintf(&sb, "o%d,c%d,%d.%02d,%s,%s\n", i, i%5000, i%300, i%100, []string{"", "WINTER"}[i%2], start.Add(time.Duration(i)*time.Second).Format("2006-01-02 15:04:05"))
	}
	path := filepath.Join(b.TempDir(), "orders.csv")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	m, err := importer.ParseMapping([]byte(ordersMapping))
	if err != nil {
		b.Fatal(err)
	}
	newClient := func() *kgo.Client {
		cl, err := kafka.NewClient(config.Kafka{Brokers: cluster.ListenAddrs(), ClientID: "bench"}, kafka.ProducerOpts()...)
		if err != nil {
			b.Fatal(err)
		}
		return cl
	}
	// The records the importer produces, captured once for the baseline.
	var recs []*kgo.Record
	b.Run("import", func(b *testing.B) {
		cl := newClient()
		defer cl.Close()
		b.SetBytes(int64(sb.Len()))
		b.ReportAllocs()
		b.ResetTimer()
		cpu := cpuTime()
		for i := 0; i < b.N; i++ {
			s, err := importer.Import(context.Background(), cl, []string{path}, importer.Options{Mapping: m})
			if err != nil || s.Imported != benchRows {
				b.Fatalf("%s: %v", s, err)
			}
		}
		reportRates(b, cpu)
	})
	b.Run("raw-produce", func(b *testing.B) {
		recs = captured(b, cluster, benchRows)
		cl := newClient()
		defer cl.Close()
		b.ReportAllocs()
		b.ResetTimer()
		cpu := cpuTime()
		for i := 0; i < b.N; i++ {
			for _, r := range recs {
				cl.Produce(context.Background(), &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value}, nil)
			}
			if err := cl.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		reportRates(b, cpu)
	})
}

// cpuTime is the process's CPU time so far (user and system, all threads).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRates reports rows/s of wall time and the CPU time a row took
// (kfake's share included), and rows per CPU-second: on a machine shared
// with other work the CPU figures say more than the wall-clock rate.
func reportRates(b *testing.B, since time.Duration) {
	rows := float64(benchRows * b.N)
	cpu := cpuTime() - since
	b.ReportMetric(rows/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/rows/1000, "cpu-µs/row")
	b.ReportMetric(rows/cpu.Seconds(), "rows/cpu-s")
}

// captured reads back n records the import benchmark produced.
func captured(b *testing.B, cluster *kfake.Cluster, n int) []*kgo.Record {
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics("pulse.events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if len(out) < n {
				out = append(out, r)
			}
		})
	}
	if len(out) < n {
		b.Fatalf("read back %d records, want %d", len(out), n)
	}
	return out
}
