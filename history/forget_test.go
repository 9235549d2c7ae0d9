package history

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/pulse-rt/pulse/deletion"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/model"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestForgetDeletesRows: the linker's tombstones of a person deleted on
// request (pulse.identity records with no value) delete its rows from
// every table, on a real ClickHouse: events as userId, anonymousId and
// previousId, segment changes, predictions, trait scores and identity
// links (a value with a quote and a backslash included); the exits that
// carry the deletion's reason are not inserted; another person's rows
// stay.
func TestForgetDeletesRows(t *testing.T) {
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	cfg := testConfig(t, native, db)
	tp := cfg.Kafka.Topics
	at := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	ev := func(ev event.Event) {
		ev.Timestamp, ev.ReceivedAt = at, at
		b, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: tp.Events, Key: []byte(ev.EntityID()), Value: b})
	}
	gone, kept := `pu'\x`, "qu"
	ev(event.Event{Type: event.Track, Event: "Product Viewed", AnonymousID: "dev-a", MessageID: "v1"})
	ev(event.Event{Type: event.Identify, AnonymousID: "dev-a", UserID: gone, MessageID: "i1"})
	ev(event.Event{Type: event.Alias, PreviousID: "old-id", UserID: gone, MessageID: "a1"})
	ev(event.Event{Type: event.Track, Event: "Order Completed", UserID: gone, MessageID: "o1"})
	ev(event.Event{Type: event.Track, Event: "Order Completed", UserID: kept, MessageID: "o2"})
	for _, id := range []string{gone, kept} {
		for _, r := range []segment.Record{
			segment.NewRecord(segment.Change{Segment: "buyers", Enter: true}, "user", id, at, "c1", nil),
			segment.NewRecord(segment.Change{Segment: "buyers"}, "user", id, at.Add(time.Minute), "c2", nil),
		} {
			b, err := r.Encode()
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, &kgo.Record{Topic: tp.Segments, Key: []byte(id), Value: b})
		}
		score := 0.5
		ts := model.TraitScore{ChangeID: "t-" + id, Trait: "churn_risk", Model: "churn", Entity: "user", ID: id, Score: &score, At: at}
		b, err := ts.Encode()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: tp.Traits, Key: []byte(id), Value: b})
		p := model.PredictionRecord{UUID: "p-" + id, Model: "m", Entity: "user", ID: id, Score: &score, At: at}
		if b, err = p.Encode(); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: tp.Predictions, Key: []byte(id), Value: b})
	}
	for _, l := range []identity.Link{
		{Identifier: "user_id:" + gone, CanonicalID: gone, At: at, MessageID: "i1", Kind: identity.KindIdentify},
		{Identifier: "anonymous_id:dev-a", CanonicalID: gone, At: at, MessageID: "i1", Kind: identity.KindIdentify},
		{Identifier: "email:pu@example.com", CanonicalID: gone, At: at, MessageID: "i1", Kind: identity.KindIdentify},
		{Identifier: "user_id:" + kept, CanonicalID: kept, At: at, MessageID: "i2", Kind: identity.KindIdentify},
	} {
		b, err := identity.EncodeLink(l)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: tp.Identity, Key: []byte(l.Identifier), Value: b})
	}
	produce(t, cfg, recs...)
	startWriter(t, cfg, WriterOptions{FlushInterval: 100 * time.Millisecond})
	conn := openTest(t, native)
	counts := func(id string) map[string]string {
		q := "(" + stringList([]string{id}) + ")"
		return map[string]string{
			"events":          "SELECT count() FROM " + db + ".events WHERE user_id IN " + q + " OR anonymous_id IN " + q + " OR previous_id IN " + q,
			"segment_changes": "SELECT count() FROM " + db + ".segment_changes WHERE entity_id IN " + q,
			"predictions":     "SELECT count() FROM " + db + ".predictions WHERE entity_id IN " + q,
			"trait_scores":    "SELECT count() FROM " + db + ".trait_scores WHERE entity_id IN " + q,
			"identity_links":  "SELECT count() FROM " + db + ".identity_links WHERE canonical_id IN " + q,
		}
	}
	want := map[string]uint64{"events": 3, "segment_changes": 2, "predictions": 1, "trait_scores": 1, "identity_links": 3}
	for table, sql := range counts(gone) {
		waitCount(t, conn, sql, want[table], 20*time.Second)
	}

	// Before the deletion, the person's export (an access request): the
	// rows the deletion will delete, no one else's.
	r := NewReader(conn, db)
	person := []identity.Identifier{identity.User(gone), identity.Anonymous("dev-a"), {Kind: "email", Value: "pu@example.com"}}
	var order []string
	exported := map[string][]map[string]any{}
	read, err := r.ExportPerson(context.Background(), person, func(table string, row map[string]any) error {
		if len(order) == 0 || order[len(order)-1] != table {
			order = append(order, table)
		}
		exported[table] = append(exported[table], row)
		for _, k := range []string{"entity_id", "user_id", "canonical_id"} {
			if row[k] == kept {
				t.Errorf("%s: a row of %s exported: %v", table, kept, row)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantRows := map[string]int{"identity_links": 3, "events": 4, "segment_changes": 2, "predictions": 1, "trait_scores": 1}
	for table, n := range wantRows {
		if read[table] != n || len(exported[table]) != n {
			t.Errorf("export: %d %s rows (counted %d), want %d", len(exported[table]), table, read[table], n)
		}
	}
	if got := strings.Join(order, " "); got != "identity_links events segment_changes predictions trait_scores" {
		t.Errorf("export order %s", got)
	}
	if evs := exported["events"]; len(evs) == 4 {
		o1 := evs[3]
		props, _ := o1["properties"].(json.RawMessage)
		if o1["message_id"] != "o1" || o1["timestamp"] != at || string(props) != "{}" || o1["received_at"] != at ||
			o1["kafka_offset"] != nil || o1["received_at_ms"] != nil || o1["sent_at"] != nil || o1["group_id"] != nil {
			t.Errorf("exported event row %v", o1)
		}
	}

	// The deletion: the tombstones; its exits (reason deleted) come after.
	forgotten0 := testutil.ToFloat64(forgotten)
	// Each names its part of the deletion (deletion.Header), as the
	// linker's do; one written by hand names none.
	tomb := func(key string, part string) *kgo.Record {
		r := &kgo.Record{Topic: tp.Identity, Key: []byte(key)}
		if part != "" {
			r.Headers = []kgo.RecordHeader{{Key: deletion.Header, Value: []byte(part)}}
		}
		return r
	}
	produce(t, cfg, tomb("user_id:"+gone, "d1/0"), tomb("anonymous_id:dev-a", "d1/1"), tomb("email:pu@example.com", "d1/2"), tomb("user_id:nobody", ""))
	for table, sql := range counts(gone) {
		waitCount(t, conn, sql, 0, 30*time.Second)
		t.Logf("%s: the deleted person's rows gone", table)
	}
	// The history's share of the deletion's progress: a record per part.
	var parts []string
	for _, r := range testenv.ConsumeExactly(t, cfg.Kafka.Brokers, tp.Deletions, 3) {
		rec, err := deletion.Decode(r.Value)
		if err != nil || rec.Stage != deletion.History || rec.Request != "d1" || string(r.Key) != string(rec.Key()) || rec.At.IsZero() {
			t.Errorf("deletion record %s %s: %+v %v", r.Key, r.Value, rec, err)
		}
		parts = append(parts, string(r.Key))
	}
	slices.Sort(parts)
	if got := strings.Join(parts, " "); got != "d1/history/0 d1/history/1 d1/history/2" {
		t.Errorf("deletion records %s", got)
	}
	for _, sql := range counts("dev-a") {
		waitCount(t, conn, sql, 0, 30*time.Second)
	}
	waitCount(t, conn, "SELECT count() FROM "+db+".identity_links WHERE identifier LIKE '%pu@example.com'", 0, 30*time.Second)
	waitCount(t, conn, "SELECT count() FROM "+db+".events WHERE previous_id = 'old-id'", 0, 30*time.Second)
	// The exits of the deletion, read after it: not inserted (a change of
	// the other person's after them shows the writer got that far).
	exit := segment.NewRecord(segment.Change{Segment: "buyers"}, "user", gone, at.Add(time.Hour), "forget/d1", nil)
	exit.Reason = segment.ReasonDeleted
	later := segment.NewRecord(segment.Change{Segment: "buyers", Enter: true}, "user", kept, at.Add(time.Hour), "c3", nil)
	var out []*kgo.Record
	for _, r := range []segment.Record{exit, later} {
		b, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &kgo.Record{Topic: tp.Segments, Key: []byte(gone), Value: b}) // one partition: in order
	}
	produce(t, cfg, out...)
	for table, sql := range counts(kept) {
		n := uint64(1)
		if table == "segment_changes" {
			n = 3
		}
		waitCount(t, conn, sql, n, 5*time.Second)
	}
	waitCount(t, conn, counts(gone)["segment_changes"], 0, time.Second)

	// Events read after the tombstones: one received before the deletion
	// (a backlog) is not inserted; one received after it is, a new person.
	recs = nil
	ev(event.Event{Type: event.Track, Event: "Order Completed", UserID: gone, MessageID: "o-backlog"})
	after := event.Event{Type: event.Track, Event: "Order Completed", UserID: gone, MessageID: "o-new"}
	after.Timestamp, after.ReceivedAt = time.Now().Add(time.Hour), time.Now().Add(time.Hour)
	b, err := after.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	recs = append(recs, &kgo.Record{Topic: tp.Events, Key: []byte(gone), Value: b})
	produce(t, cfg, recs...)
	waitCount(t, conn, "SELECT count() FROM "+db+".events WHERE message_id = 'o-new'", 1, 20*time.Second)
	waitCount(t, conn, counts(gone)["events"], 1, time.Second)
	if d := testutil.ToFloat64(forgotten) - forgotten0; d != 4 {
		t.Errorf("pulse_history_forgotten_identifiers_total grew by %v, want 4", d)
	}
	waitCount(t, conn, fmt.Sprintf("SELECT count() FROM %s.invalid_events", db), 0, time.Second)
}

// TestRecallDeletions: a writer starting reads the identity topic's
// tombstones of the last day (written in a transaction, as the linker
// writes them: its commit marker holds the last offset) and leaves out
// the rows of those people from before their deletion; a row after it,
// or of someone else, is kept.
func TestRecallDeletions(t *testing.T) {
	native, _ := testenv.ClickHouse(t)
	cfg := testConfig(t, native, testenv.ClickHouseDatabase(t))
	tp := cfg.Kafka.Topics
	txn, err := kafka.NewClient(cfg.Kafka, append(kafka.ProducerOpts(), kgo.TransactionalID(tp.Identity+"-test"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, txn, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	link, _ := identity.EncodeLink(identity.Link{Identifier: "user_id:kept", CanonicalID: "kept", At: time.Now(), MessageID: "i1", Kind: identity.KindIdentify})
	if err := txn.ProduceSync(ctx,
		&kgo.Record{Topic: tp.Identity, Key: []byte("user_id:gone")},
		&kgo.Record{Topic: tp.Identity, Key: []byte("anonymous_id:gone-device")},
		&kgo.Record{Topic: tp.Identity, Key: []byte("email:gone@example.com")},
		&kgo.Record{Topic: tp.Identity, Key: []byte("user_id:kept"), Value: link},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	w, err := NewWriter(cfg, WriterOptions{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer w.cl.Close()
	defer w.conn.Close()
	if err := w.recallDeletions(ctx); err != nil {
		t.Fatal(err)
	}
	before, after := deleted.Add(-time.Hour), deleted.Add(time.Hour)
	for _, c := range []struct {
		id   string
		at   time.Time
		left bool
	}{{"gone", before, true}, {"gone-device", before, true}, {"gone", after, false}, {"kept", before, false}, {"gone@example.com", before, false}} {
		if got := w.forgot.before(c.id, c.at); got != c.left {
			t.Errorf("a row of %s at %v left out: %v, want %v", c.id, c.at, got, c.left)
		}
	}
}

// TestOldestRunningMutation: the creation time of the oldest mutation of
// the database that is not done, on a real ClickHouse; none once done. A
// mutation that fails on a row (throwIf) stays not done, until its table
// goes.
func TestOldestRunningMutation(t *testing.T) {
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	conn := openTest(t, native)
	ctx := context.Background()
	r := NewReader(conn, db)
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS " + quoteIdent(db),
		"CREATE TABLE " + quoteIdent(db) + ".m (a UInt8) ENGINE = MergeTree ORDER BY a",
		"INSERT INTO " + quoteIdent(db) + ".m (a) SELECT toUInt8(number + 1) FROM system.numbers LIMIT 2",
		"ALTER TABLE " + quoteIdent(db) + ".m DELETE WHERE a = 2",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 20*time.Second, "the mutation done", func() bool {
		oldest, err := r.OldestRunningMutation(ctx)
		return err == nil && oldest.IsZero()
	})
	before := time.Now().Add(-time.Second)
	if err := conn.Exec(ctx, "ALTER TABLE "+quoteIdent(db)+".m DELETE WHERE throwIf(a = 1)"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // it fails, and stays
	oldest, err := r.OldestRunningMutation(ctx)
	if err != nil || oldest.Before(before.Truncate(time.Second)) || oldest.After(time.Now()) {
		t.Fatalf("oldest running mutation %v, %v; want one created since %v", oldest, err, before)
	}
	if err := conn.Exec(ctx, "DROP TABLE "+quoteIdent(db)+".m"); err != nil {
		t.Fatal(err)
	}
	if oldest, err := r.OldestRunningMutation(ctx); err != nil || !oldest.IsZero() {
		t.Fatalf("after the table went: %v, %v", oldest, err)
	}
}

// TestRecallDeletionsWindow: a window that holds only a transaction's
// marker is read at once; a deletion three hours old is recalled (the
// writer remembers deletions forgetMemoryFor; a recall of the last hour
// alone, as before, missed it); and a window with more records than
// forgetRecallMax recalls its latest deletions rather than none.
func TestRecallDeletionsWindow(t *testing.T) {
	native, _ := testenv.ClickHouse(t)
	cfg := testConfig(t, native, testenv.ClickHouseDatabase(t))
	tp := cfg.Kafka.Topics
	// Without ProducerOpts: its delivery timeout counts from a record's
	// timestamp, and one record here is three hours old.
	txn, err := kafka.NewClient(cfg.Kafka, kgo.TransactionalID(tp.Identity+"-test"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	ctx := context.Background()
	write := func(recs ...*kgo.Record) {
		t.Helper()
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := txn.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
	}
	recall := func() *Writer {
		t.Helper()
		w, err := NewWriter(cfg, WriterOptions{}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.cl.Close(); w.conn.Close() })
		if err := w.recallDeletions(ctx); err != nil {
			t.Fatal(err)
		}
		return w
	}
	// A record from before the window committed now: the window's only
	// offset is the commit's marker, which ends the read (before, the
	// read waited its 30 s for a record that never came, and recall
	// failed).
	write(&kgo.Record{Topic: tp.Identity, Partition: 0, Key: []byte("user_id:older"), Timestamp: time.Now().Add(-25 * time.Hour)})
	recall()
	threeHours := time.Now().Add(-3 * time.Hour)
	write(&kgo.Record{Topic: tp.Identity, Partition: 0, Key: []byte("user_id:old"), Timestamp: threeHours})
	if w := recall(); !w.forgot.before("old", threeHours.Add(-time.Minute)) {
		t.Error("a deletion three hours old was not recalled")
	}

	var recs []*kgo.Record
	for i := range 10 {
		recs = append(recs, &kgo.Record{Topic: tp.Identity, Partition: 1, Key: fmt.Appendf(nil, "user_id:d%d", i)})
	}
	write(recs...)
	was := forgetRecallMax
	forgetRecallMax = 5
	defer func() { forgetRecallMax = was }()
	w := recall()
	before := time.Now().Add(-time.Hour)
	if !w.forgot.before("d9", before) {
		t.Error("the latest deletion was not recalled past forgetRecallMax")
	}
	for _, id := range []string{"d0", "d1", "old"} {
		if w.forgot.before(id, before) {
			t.Errorf("%s recalled: more than the latest forgetRecallMax records read", id)
		}
	}
	if n := len(w.forgot.at); n == 0 || n > 5 {
		t.Errorf("%d deletions recalled, want 1 to 5", n)
	}
}
