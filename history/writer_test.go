package history

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/model"
	"github.com/twmb/franz-go/pkg/kgo"
)

var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// testConfig points a config at an embedded Kafka with topics of the test's
// own and at a ClickHouse database of the test's own.
func testConfig(t *testing.T, chAddr, db string) *config.Config {
	t.Helper()
	cfg, _ := testConfigEmbedded(t, chAddr, db)
	return cfg
}

// testConfigEmbedded is testConfig and its embedded Kafka.
func testConfigEmbedded(t *testing.T, chAddr, db string) (*config.Config, *kafka.Embedded) {
	t.Helper()
	k, err := kafka.StartEmbedded(kafka.EmbeddedOptions{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	cfg := &config.Config{}
	cfg.Kafka.Brokers = k.Addrs()
	cfg.Kafka.Partitions = 2
	cfg.ClickHouse.Addr = chAddr
	cfg.ClickHouse.Database = db
	cfg.ApplyDefaults()
	cl, err := kafka.NewClient(cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafka.EnsureTopics(context.Background(), cl, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	return cfg, k
}

func produce(t *testing.T, cfg *config.Config, recs ...*kgo.Record) {
	t.Helper()
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// startWriter runs a Writer until the test ends.
func startWriter(t *testing.T, cfg *config.Config, opts WriterOptions) {
	t.Helper()
	w, err := NewWriter(cfg, opts, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func openTest(t testing.TB, addr string) driver.Conn {
	t.Helper()
	conn, err := Open(config.ClickHouse{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// migratedDB is a connection to the test ClickHouse and a database of the
// test's own with Pulse's tables in it.
func migratedDB(t testing.TB) (driver.Conn, string) {
	t.Helper()
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	conn := openTest(t, native)
	if err := Migrate(context.Background(), conn, db); err != nil {
		t.Fatal(err)
	}
	return conn, db
}

// waitCount waits until sql (a count) answers want.
func waitCount(t *testing.T, conn driver.Conn, sql string, want uint64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var got uint64
	var err error
	for time.Now().Before(deadline) {
		if err = conn.QueryRow(context.Background(), sql).Scan(&got); err == nil && got == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: got %d (err %v), want %d", sql, got, err, want)
}

func TestWriterWritesEveryTopic(t *testing.T) {
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	cfg := testConfig(t, native, db)
	tp := cfg.Kafka.Topics
	rec := func(topic, v string) *kgo.Record { return &kgo.Record{Topic: topic, Value: []byte(v)} }
	produce(t, cfg,
		rec(tp.Events, `{"type":"track","messageId":"m1","userId":"u1","event":"Order Completed","properties":{"revenue":"12.5","total":15,"order_id":42,"product_id":"p9","other":[1,2]},"context":{"ip":"1.2.3.4"},"timestamp":"2024-03-01T10:00:00.123Z","receivedAt":"2024-03-01T10:00:01Z","sentAt":"2024-03-01T10:00:00.5Z"}`),
		rec(tp.Events, `{"type":"identify","anonymousId":"a1","traits":{"plan":"pro"},"receivedAt":"2024-03-02T00:00:00Z"}`),
		rec(tp.Events, `{"type":"track","userId":"u2","timestamp":"2024-03-01T10:00:00Z"}`), // no event name: invalid
		rec(tp.Events, `not json`),
		rec(tp.Invalid, `{"error":"userId: userId or anonymousId is required","field":"userId","index":3,"source":"ingest","keyName":"web","receivedAt":"2024-03-01T10:00:00Z","messageId":"dl1","event":{"type":"track"}}`),
		rec(tp.Segments, `{"change_id":"c1","segment":"big_spenders","entity":"user","id":"u1","change":"enter","at":"2024-03-01T10:00:00.123Z","features":{"spend_30d":120}}`),
		rec(tp.Predictions, `{"uuid":"p1","model":"churn","version":3,"entity":"user","id":612,"features":{"a":1},"score":[0.25,0.75],"prediction":"stay","model_used":true,"at":1709287200000}`),
		rec(tp.Predictions, `{"model":"churn","id":"u1","score":0.9,"prediction":1,"model_used":false,"at":"2024-03-01T10:00:00Z"}`),
	)
	startWriter(t, cfg, WriterOptions{FlushInterval: 100 * time.Millisecond})
	conn := openTest(t, native)
	waitCount(t, conn, "SELECT count() FROM "+db+".events", 2, 20*time.Second)
	waitCount(t, conn, "SELECT count() FROM "+db+".invalid_events", 3, 20*time.Second)
	waitCount(t, conn, "SELECT count() FROM "+db+".segment_changes", 1, 20*time.Second)
	waitCount(t, conn, "SELECT count() FROM "+db+".predictions", 2, 20*time.Second)

	ctx := context.Background()
	var (
		entity, props, ctxJSON, orderID, productID string
		tsMs, sentMs                               int64
		ts                                         time.Time
		revenue, total                             *float64
	)
	if err := conn.QueryRow(ctx, "SELECT entity_id, properties, context, order_id, product_id, timestamp_ms, sent_at_ms, timestamp, revenue, total FROM "+db+".events WHERE message_id = 'm1'").
		Scan(&entity, &props, &ctxJSON, &orderID, &productID, &tsMs, &sentMs, &ts, &revenue, &total); err != nil {
		t.Fatal(err)
	}
	if entity != "u1" || orderID != "42" || productID != "p9" || tsMs != 1709287200123 || sentMs != 1709287200500 ||
		ts.Unix() != 1709287200 || revenue == nil || *revenue != 12.5 || total == nil || *total != 15 || ctxJSON != `{"ip":"1.2.3.4"}` {
		t.Errorf("m1 row: entity %q order %q product %q ts %d sent %d %v revenue %v total %v context %s", entity, orderID, productID, tsMs, sentMs, ts, revenue, total, ctxJSON)
	}
	// Where each event came from: what backfill cuts history by for seeds.
	var part int32
	var off int64
	if err := conn.QueryRow(ctx, "SELECT kafka_partition, kafka_offset FROM "+db+".events WHERE message_id = 'm1'").Scan(&part, &off); err != nil {
		t.Fatal(err)
	}
	if want := fetchPosition(t, cfg, "m1"); part != want.Partition || off != want.Before {
		t.Errorf("m1 kafka position %d/%d, want %d/%d", part, off, want.Partition, want.Before)
	}
	n := 0
	if err := NewReader(conn, db).EachEntity(ctx, EventFilter{Cut: &Cut{Partition: part, Before: off + 1}}, func(id string, evs []*event.Event) error {
		for _, e := range evs {
			if e.MessageID == "m1" {
				n++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := NewReader(conn, db).EachEntity(ctx, EventFilter{Cut: &Cut{Partition: part, Before: off}}, func(id string, evs []*event.Event) error {
		for _, e := range evs {
			if e.MessageID == "m1" {
				n += 10
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("a cut after m1's offset reads it, one at it does not: got %d", n)
	}
	var anonID, traits string
	var rev *float64
	if err := conn.QueryRow(ctx, "SELECT message_id, traits, revenue FROM "+db+".events WHERE entity_id = 'a1'").Scan(&anonID, &traits, &rev); err != nil {
		t.Fatal(err)
	}
	if anonID != DerivedMessageID(tp.Events, 0, 0) && anonID != DerivedMessageID(tp.Events, 1, 0) && anonID[:len(tp.Events)] != tp.Events {
		t.Errorf("derived message id %q", anonID)
	}
	if traits != `{"plan":"pro"}` || rev != nil {
		t.Errorf("a1 row: traits %s revenue %v", traits, rev)
	}
	var errs []string
	rows, err := conn.Query(ctx, "SELECT source, error FROM "+db+".invalid_events ORDER BY error")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var src, e string
		rows.Scan(&src, &e)
		errs = append(errs, src+": "+e)
	}
	if len(errs) != 3 || !strings.HasPrefix(errs[0], "history: history: cannot read "+tp.Events+" record: cannot decode event: ") ||
		errs[1] != "history: history: cannot read "+tp.Events+" record: event: required for track" ||
		errs[2] != "ingest: userId: userId or anonymousId is required" {
		t.Errorf("invalid events: %q", errs)
	}
	var score *float64
	var scores, prediction, version, id string
	var used uint8
	var atMs int64
	if err := conn.QueryRow(ctx, "SELECT score, scores, prediction, version, entity_id, model_used, at_ms FROM "+db+".predictions WHERE uuid = 'p1'").
		Scan(&score, &scores, &prediction, &version, &id, &used, &atMs); err != nil {
		t.Fatal(err)
	}
	if score == nil || *score != 0.25 || scores != "[0.25,0.75]" || prediction != "stay" || version != "3" || id != "612" || used != 1 || atMs != 1709287200000 {
		t.Errorf("p1: score %v scores %s prediction %s version %s id %s used %d at %d", score, scores, prediction, version, id, used, atMs)
	}
	if err := conn.QueryRow(ctx, "SELECT prediction, model_used FROM "+db+".predictions WHERE uuid != 'p1'").Scan(&prediction, &used); err != nil {
		t.Fatal(err)
	}
	if prediction != "1" || used != 0 {
		t.Errorf("second prediction: %s %d", prediction, used)
	}
}

// TestMigrateIsIdempotentAndAddsColumns runs Migrate over a table an older
// version made, twice.
func TestMigrateIsIdempotentAndAddsColumns(t *testing.T) {
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	conn := openTest(t, native)
	ctx := context.Background()
	old := eventsTable
	old.columns = old.columns[:len(old.columns)-4]
	if old.columns[len(old.columns)-1].name != "total" {
		t.Fatalf("the old table should end before order_id, product_id, kafka_partition, kafka_offset: %v", old.columns)
	}
	if err := conn.Exec(ctx, old.createSQL(db)); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "INSERT INTO "+db+".events (message_id, entity_id, timestamp) SELECT 'old', 'u1', now()"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := Migrate(ctx, conn, db); err != nil {
			t.Fatal(err)
		}
	}
	have, err := columnsOf(ctx, conn, db, "events")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range eventsTable.columns {
		if have[c.name] != c.typ {
			t.Errorf("column %s: type %q, want %q", c.name, have[c.name], c.typ)
		}
	}
	// The row from before the migration has the defaults, and the new
	// columns take a full insert.
	var part int32
	var off int64
	if err := conn.QueryRow(ctx, "SELECT kafka_partition, kafka_offset FROM "+db+".events WHERE message_id = 'old'").Scan(&part, &off); err != nil {
		t.Fatal(err)
	}
	if part != 0 || off != 0 {
		t.Errorf("old row: kafka position %d/%d, want the defaults 0/0", part, off)
	}
	var rows eventRows
	if err := rows.addEvent(&kgo.Record{Topic: "pulse.events", Partition: 3, Offset: 77,
		Value: []byte(`{"type":"track","event":"x","userId":"u2","messageId":"new","timestamp":"2024-03-01T10:00:00Z"}`)}); err != nil {
		t.Fatal(err)
	}
	if err := insertColumns(ctx, conn, eventsTable.insertSQL(db), rows.columns()); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT kafka_partition, kafka_offset FROM "+db+".events WHERE message_id = 'new'").Scan(&part, &off); err != nil {
		t.Fatal(err)
	}
	if part != 3 || off != 77 {
		t.Errorf("new row: kafka position %d/%d, want 3/77", part, off)
	}
}

// fetchPosition finds the record with messageId id on the events topic.
func fetchPosition(t *testing.T, cfg *config.Config, id string) Cut {
	t.Helper()
	cl, err := kafka.NewClient(cfg.Kafka, kgo.ConsumeTopics(cfg.Kafka.Topics.Events), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		for _, r := range cl.PollFetches(ctx).Records() {
			if strings.Contains(string(r.Value), `"messageId":"`+id+`"`) {
				return Cut{Partition: r.Partition, Before: r.Offset}
			}
		}
	}
	t.Fatalf("no record with messageId %s", id)
	return Cut{}
}

// TestWriterSurvivesClickHouseOutage stops a real ClickHouse mid-load and
// starts it again: every event lands once.
func TestWriterSurvivesClickHouseOutage(t *testing.T) {
	t.Parallel()
	srv := testenv.StartClickHouse(t)
	cfg := testConfig(t, srv.Addr(), "pulse")
	retriesBefore := counterValue(insertRetries)
	startWriter(t, cfg, WriterOptions{BatchRows: 500, FlushInterval: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})

	const total = 6000
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var wg sync.WaitGroup
	produceRange := func(from, to int) {
		for i := from; i < to; i++ {
			v := fmt.Sprintf(`{"type":"track","messageId":"m%d","userId":"u%d","event":"e","timestamp":"2024-03-01T10:00:00Z"}`, i, i%50)
			wg.Add(1)
			cl.Produce(context.Background(), &kgo.Record{Topic: cfg.Kafka.Topics.Events, Key: []byte(fmt.Sprint(i % 50)), Value: []byte(v)}, func(_ *kgo.Record, err error) {
				if err != nil {
					t.Errorf("produce: %v", err)
				}
				wg.Done()
			})
			if i%100 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	conn := openTest(t, srv.Addr())
	produceRange(0, 2000)
	waitRows := func(min uint64) {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			var n uint64
			if conn.QueryRow(context.Background(), "SELECT count() FROM pulse.events").Scan(&n) == nil && n >= min {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("fewer than %d rows after 30s", min)
	}
	waitRows(500) // mid-load
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	produceRange(2000, total) // ClickHouse is down: Kafka keeps these
	wg.Wait()
	time.Sleep(time.Second) // a few failed inserts and backoffs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	waitCount(t, conn, "SELECT count() FROM pulse.events FINAL", total, 60*time.Second)
	waitCount(t, conn, "SELECT uniqExact(message_id) FROM pulse.events", total, time.Second)
	var raw uint64
	conn.QueryRow(context.Background(), "SELECT count() FROM pulse.events").Scan(&raw)
	if counterValue(insertRetries) == retriesBefore {
		t.Error("no insert was retried: the outage did not happen mid-load")
	}
	t.Logf("rows before merges: %d for %d events", raw, total)
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func benchConfig(native, db string, brokers []string) *config.Config {
	cfg := &config.Config{}
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.Partitions = 4
	cfg.ClickHouse.Addr = native
	cfg.ClickHouse.Database = db
	cfg.ApplyDefaults()
	return cfg
}

// TestDeadLetterLandsWhole produces a dead letter as the stream writes one
// (reason late, with the refused record's input position) to a writer
// whose invalid_events table an older Pulse made, and reads every field the
// producer wrote back from ClickHouse.
func TestDeadLetterLandsWhole(t *testing.T) {
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	cfg := testConfig(t, native, db)
	conn := openTest(t, native)
	ctx := context.Background()
	// The table as it was before reason and input_*.
	old := invalidTable
	old.columns = nil
	for _, c := range invalidTable.columns {
		switch c.name {
		case "reason", "input_topic", "input_partition", "input_offset":
		default:
			old.columns = append(old.columns, c)
		}
	}
	if len(old.columns) != len(invalidTable.columns)-4 {
		t.Fatalf("old table: %v", old.columns)
	}
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, old.createSQL(db)); err != nil {
		t.Fatal(err)
	}

	at := time.Date(2024, 3, 1, 10, 0, 0, 123e6, time.UTC)
	raw := `{"type":"track","event":"Order Completed","userId":"u1","messageId":"m-late","timestamp":"2024-01-01T00:00:00Z"}`
	d := event.NewDeadLetter("stream", event.ReasonLate, []byte(raw), fmt.Errorf("event older than the lateness bound"), at)
	d.MessageID = "m-late"
	d.Topic, d.Partition, d.Offset = cfg.Kafka.Topics.Events, 1, 4242
	produce(t, cfg, &kgo.Record{Topic: cfg.Kafka.Topics.Invalid, Key: []byte("u1"), Value: d.Encode()})
	startWriter(t, cfg, WriterOptions{FlushInterval: 100 * time.Millisecond})
	waitCount(t, conn, "SELECT count() FROM "+db+".invalid_events", 1, 20*time.Second)

	var (
		msgID, errText, field, source, reason, keyName, evt, inTopic, topic string
		index, inPart                                                       int32
		inOff, atMs                                                         int64
	)
	if err := conn.QueryRow(ctx, "SELECT message_id, error, field, item_index, source, reason, key_name, received_at_ms, event, input_topic, input_partition, input_offset, kafka_topic FROM "+db+".invalid_events").
		Scan(&msgID, &errText, &field, &index, &source, &reason, &keyName, &atMs, &evt, &inTopic, &inPart, &inOff, &topic); err != nil {
		t.Fatal(err)
	}
	if msgID != "m-late" || errText != "event older than the lateness bound" || field != "" || index != 0 || source != "stream" ||
		reason != event.ReasonLate || keyName != "" || atMs != at.UnixMilli() || evt != raw ||
		inTopic != cfg.Kafka.Topics.Events || inPart != 1 || inOff != 4242 || topic != cfg.Kafka.Topics.Invalid {
		t.Errorf("row: id %q error %q field %q index %d source %q reason %q key %q at %d event %s input %s/%d/%d topic %s",
			msgID, errText, field, index, source, reason, keyName, atMs, evt, inTopic, inPart, inOff, topic)
	}
}

// TestPredictionLandsWhole: every field of a prediction record as the
// scorer writes it (model.AppendPrediction) reaches the predictions table.
func TestPredictionLandsWhole(t *testing.T) {
	conn, db := migratedDB(t)
	ctx := context.Background()
	at := time.Date(2024, 3, 1, 10, 0, 0, 123e6, time.UTC)
	score := 0.75
	r := model.PredictionRecord{UUID: "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d", Model: "churn", Version: "a1b2c3d4e5f6", Entity: "account",
		ID: "612", Score: &score, ModelUsed: true, At: at}
	v := model.AppendPrediction(nil, &r, []string{"orders_30d", "revenue_30d"}, []float64{2, math.NaN()}, []byte(`"stay"`))
	var rows predictionRows
	if err := rows.addPrediction(&kgo.Record{Topic: "pulse.predictions", Partition: 1, Offset: 9, Value: v}); err != nil {
		t.Fatal(err)
	}
	if err := insertColumns(ctx, conn, predictionsTable.insertSQL(db), rows.columns()); err != nil {
		t.Fatal(err)
	}
	var (
		id, mdl, version, entity, entityID, features, scores, prediction string
		got                                                              *float64
		used                                                             uint8
		atMs                                                             int64
	)
	if err := conn.QueryRow(ctx, "SELECT uuid, model, version, entity, entity_id, features, score, scores, prediction, model_used, at_ms FROM "+db+".predictions").
		Scan(&id, &mdl, &version, &entity, &entityID, &features, &got, &scores, &prediction, &used, &atMs); err != nil {
		t.Fatal(err)
	}
	if id != r.UUID || mdl != "churn" || version != "a1b2c3d4e5f6" || entity != "account" || entityID != "612" ||
		features != `{"orders_30d":2,"revenue_30d":null}` || got == nil || *got != 0.75 || scores != "0.75" || prediction != "stay" ||
		used != 1 || atMs != at.UnixMilli() {
		t.Errorf("row: %s %s %s %s %s %s %v %s %s %d %d", id, mdl, version, entity, entityID, features, got, scores, prediction, used, atMs)
	}
}
