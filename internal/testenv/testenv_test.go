package testenv_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pulse-rt/pulse/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestRedis(t *testing.T) {
	addr, db := testenv.RedisDB(t)
	if db < 1 {
		t.Fatalf("RedisDB handed out database %d", db)
	}
	r := dialRedis(t, addr)
	r.do(t, "SELECT", itoa(db))
	if got := r.do(t, "PING"); got != "+PONG" {
		t.Fatalf("PING = %q", got)
	}
	prefix := testenv.RedisKeyPrefix(t)
	r.do(t, "SET", prefix+"k", "v")
	if got := r.do(t, "GET", prefix+"k"); got != "$1" {
		t.Fatalf("GET = %q, want a 1-byte value", got)
	}
	_, db2 := testenv.RedisDB(t)
	if db2 == db {
		t.Fatalf("RedisDB handed out database %d twice", db)
	}
}

func TestClickHouse(t *testing.T) {
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	conn := openClickHouse(t, native, db)
	ctx := context.Background()

	var one uint8
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	t.Logf("ClickHouse %s", version)

	if err := conn.Exec(ctx, "CREATE TABLE t (id UInt64, name String) ENGINE = MergeTree ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	// ClickHouse 18.16 with clickhouse-go v2 needs the column list: a bare
	// "INSERT INTO t" prepares a batch of no columns.
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO t (id, name)")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := batch.Append(uint64(i), "n"); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM t").Scan(&n); err != nil || n != 100 {
		t.Fatalf("count() = %d, %v; want 100", n, err)
	}
}

func TestKafka(t *testing.T) {
	seeds := testenv.Kafka(t)
	topic := testenv.Topic(t, "pulse.test")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	prod, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("u1"), Value: []byte("hello")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}

	cons, err := kgo.NewClient(kgo.SeedBrokers(seeds...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumerGroup(testenv.Topic(t, "group")),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	for {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("no record consumed: %v", err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
		var got []string
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Key)+"="+string(r.Value)) })
		if len(got) > 0 {
			if strings.Join(got, ",") != "u1=hello" {
				t.Fatalf("consumed %v, want [u1=hello]", got)
			}
			if err := cons.CommitUncommittedOffsets(ctx); err != nil {
				t.Fatalf("commit: %v", err)
			}
			return
		}
	}
}

// A private ClickHouse keeps its data through a graceful stop and a kill.
func TestClickHouseStopStart(t *testing.T) {
	t.Parallel()
	s := testenv.StartClickHouse(t)
	t.Logf("private ClickHouse ready in %v", s.StartupTime())
	ctx := context.Background()
	conn := openClickHouse(t, s.Addr(), "default")
	if err := conn.Exec(ctx, "CREATE TABLE t (id UInt64) ENGINE = MergeTree ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "INSERT INTO t SELECT number FROM system.numbers LIMIT 1000"); err != nil {
		t.Fatal(err)
	}
	count := func() (uint64, error) {
		var n uint64
		err := conn.QueryRow(ctx, "SELECT count() FROM t").Scan(&n)
		return n, err
	}

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := count(); err == nil {
		t.Fatal("query succeeded while ClickHouse was stopped")
	}
	for _, restart := range []struct {
		name string
		halt func() error
	}{{"stop", func() error { return nil }}, {"kill", s.Kill}} {
		if err := restart.halt(); err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatalf("restart after %s: %v", restart.name, err)
		}
		t.Logf("ClickHouse restarted after %s in %v", restart.name, s.StartupTime())
		var n uint64
		var err error
		for range 50 { // the client redials on its own; give it a few tries
			if n, err = count(); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil || n != 1000 {
			t.Fatalf("after %s: count() = %d, %v; want 1000", restart.name, n, err)
		}
	}
}

// A private Redis keeps its data through a graceful stop.
func TestRedisStopStart(t *testing.T) {
	t.Parallel()
	s := testenv.StartRedis(t)
	t.Logf("private Redis ready in %v", s.StartupTime())
	dialRedis(t, s.Addr()).do(t, "SET", "k", "v")
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if got := dialRedis(t, s.Addr()).do(t, "EXISTS", "k"); got != ":1" {
		t.Fatalf("EXISTS k after restart = %q, want :1", got)
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
}

func openClickHouse(t *testing.T, addr, db string) clickhouse.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: []string{addr},
		Auth: clickhouse.Auth{Database: db, Username: "default"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// A private Kafka keeps its records through a graceful stop.
func TestKafkaStopStart(t *testing.T) {
	t.Parallel()
	s := testenv.StartKafka(t)
	t.Logf("private Kafka ready in %v", s.StartupTime())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topic := testenv.Topic(t, "pulse.test")
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Addr()), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("kept")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	cl.Close()

	begin := time.Now()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Kafka stopped in %v", time.Since(begin))
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Kafka restarted in %v", s.StartupTime())

	cons, err := kgo.NewClient(kgo.SeedBrokers(s.Addr()), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	for {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("record produced before the restart not consumed: %v", err)
		}
		if recs := fs.Records(); len(recs) > 0 {
			if string(recs[0].Value) != "kept" {
				t.Fatalf("consumed %q, want \"kept\"", recs[0].Value)
			}
			return
		}
	}
}
