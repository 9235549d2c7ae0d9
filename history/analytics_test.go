package history

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/event"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestAnalyticsQueries runs every SQL block of docs/analytics.md on the
// test ClickHouse, over a little of each table.
func TestAnalyticsQueries(t *testing.T) {
	doc, err := os.ReadFile("../docs/analytics.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 10 {
		t.Fatalf("docs/analytics.md has %d SQL blocks, want at least 10", len(blocks))
	}
	conn, db := migratedDB(t)
	ctx := context.Background()
	now := time.Now().UTC().Add(-time.Hour)
	var evs []*event.Event
	for i, name := range []string{"Product Viewed", "Product Added", "Order Completed", "Order Completed"} {
		at := now.Add(time.Duration(i) * time.Minute)
		evs = append(evs, &event.Event{Type: event.Track, MessageID: "m" + name + at.String(), UserID: "u1", Event: name,
			Properties: map[string]any{"revenue": 20.0, "product_id": "p1", "currency": "EUR"}, Timestamp: at, ReceivedAt: at.Add(time.Second)})
	}
	evs = append(evs, &event.Event{Type: event.Page, MessageID: "p", AnonymousID: "a1", Timestamp: now.Add(-8 * 24 * time.Hour), ReceivedAt: now})
	if err := InsertEvents(ctx, conn, db, evs); err != nil {
		t.Fatal(err)
	}
	// The other tables through the writer's own decoding, as from Kafka.
	rec := func(v string) *kgo.Record { return &kgo.Record{Topic: "t", Value: []byte(v), Timestamp: now} }
	var seg segmentRows
	var pred predictionRows
	var inv invalidRows
	var traits traitScoreRows
	var links linkRows
	at := now.Format(time.RFC3339Nano)
	for _, id := range []string{"user_id:u1", "anonymous_id:a1"} {
		if err := links.addLink(&kgo.Record{Topic: "t", Key: []byte(id), Timestamp: now,
			Value: []byte(`{"identifier":"` + id + `","canonical_id":"u1","at":"` + at + `","message_id":"i1","kind":"identify"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := traits.addTraitScore(rec(`{"change_id":"t1","trait":"churn_risk","model":"churn_risk","version":"1","entity":"user","id":"u1","score":0.8,"at":"` + at + `"}`)); err != nil {
		t.Fatal(err)
	}
	if err := seg.addChange(rec(`{"change_id":"c1","segment":"buyers","entity":"user","id":"u1","change":"enter","at":"` + at + `"}`)); err != nil {
		t.Fatal(err)
	}
	if err := pred.addPrediction(rec(`{"uuid":"p1","model":"purchase_propensity","version":"1","id":"u1","score":0.7,"prediction":"yes","model_used":true,"at":"` + now.Add(-time.Hour).Format(time.RFC3339Nano) + `"}`)); err != nil {
		t.Fatal(err)
	}
	if err := inv.addDeadLetter(rec(`{"error":"event: required for track","field":"event","source":"ingest","receivedAt":"` + at + `","messageId":"d1","event":{}}`)); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		t    *table
		cols []any
	}{{&segmentsTable, seg.columns()}, {&predictionsTable, pred.columns()}, {&invalidTable, inv.columns()}, {&traitScoresTable, traits.columns()}, {&identityLinksTable, links.columns()}} {
		if err := insertColumns(ctx, conn, x.t.insertSQL(db), x.cols); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range blocks {
		sql := strings.ReplaceAll(b[1], "pulse.", db+".")
		rows, err := conn.Query(ctx, sql)
		if err != nil {
			t.Errorf("query %d: %v\n%s", i+1, err, b[1])
			continue
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Err(); err != nil {
			t.Errorf("query %d: %v", i+1, err)
		}
		rows.Close()
		if n == 0 {
			t.Errorf("query %d returned no rows over the sample data:\n%s", i+1, b[1])
		}
	}
}
