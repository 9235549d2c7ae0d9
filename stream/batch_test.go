package stream

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The stream's dead letter is event.DeadLetter with every field the
// stream's own record carried before: why (reason, error, field), who
// (source), when, the messageId, the input position and the input itself.
func TestDeadLetterCarriesReasonAndPosition(t *testing.T) {
	cfg, err := config.Parse([]byte("stream:\n  allowed_lateness: 1d\n"), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tk := p.newTask(3)
	f := func(value, reason, msgID string, cause error, want string) {
		t.Helper()
		in := &kgo.Record{Topic: "pulse.events", Partition: 3, Offset: 7, Key: []byte("a"), Value: []byte(value)}
		r := tk.deadLetter(in, reason, msgID, cause, t0)
		if r.Topic != cfg.Kafka.Topics.Invalid || string(r.Key) != "a" {
			t.Errorf("record %s/%s, want %s/a", r.Topic, r.Key, cfg.Kafka.Topics.Invalid)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(r.Value, &fields); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range []string{"error", "field", "reason", "source", "receivedAt", "messageId", "topic", "partition", "offset", "event"} {
			if v, ok := fields[k]; ok {
				got = append(got, fmt.Sprintf("%s=%s", k, v))
			}
		}
		sort.Strings(got)
		if s := strings.Join(got, " "); s != want {
			t.Errorf("dead letter %s\n got %s\nwant %s", r.Value, s, want)
		}
	}
	f(`{"type":"nope"}`, event.ReasonInvalid, "", &event.FieldError{Field: "type", Reason: "unknown"},
		`error="type: unknown" event={"type":"nope"} field="type" offset=7 partition=3 reason="invalid" receivedAt="2025-06-01T12:00:00Z" source="stream" topic="pulse.events"`)
	f(`not json`, event.ReasonLate, "m1", fmt.Errorf("event too late"),
		`error="event too late" event="not json" messageId="m1" offset=7 partition=3 reason="late" receivedAt="2025-06-01T12:00:00Z" source="stream" topic="pulse.events"`)
}

// A fetched backlog larger than maxTxnRecords (an import, a stream
// restarted far behind) commits in several transactions, each one's seen
// ids a changelog record under Kafka's 1 MB; a duplicate of an id that an
// earlier transaction of the same fetch saw is still dropped.
func TestBacklogSplitIntoTransactions(t *testing.T) {
	st := &tester{t: t}
	defer st.close()
	if err := st.start("features:\n  - {name: orders, agg: count, event: Order Completed}\n"); err != nil {
		t.Fatal(err)
	}
	const n = 2*maxTxnRecords + 500
	var recs []*kgo.Record
	for i := 0; i < n+10; i++ {
		id := i
		if i >= n {
			id = i - n // ten duplicates of the first transaction's ids
		}
		ev := event.Event{Type: event.Track, Event: "Order Completed", UserID: "u1",
			MessageID: fmt.Sprintf("%0*d", event.MaxMessageIDLen, id), Timestamp: t0}
		v, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: st.p.cfg.Kafka.Topics.Events, Offset: int64(i), Key: []byte("u1"), Value: v})
	}
	if err := st.task.processBatch(context.Background(), recs, int64(len(recs))); err != nil {
		t.Fatal(err)
	}
	if len(st.out.committed) != 3 {
		t.Fatalf("%d transactions, want 3 of at most %d records", len(st.out.committed), maxTxnRecords)
	}
	for i, txn := range st.out.committed {
		for _, r := range txn {
			if len(r.Key)+len(r.Value) > 1_000_000 {
				t.Errorf("transaction %d: record %s of %d bytes, over Kafka's 1 MB", i, r.Key, len(r.Value))
			}
		}
	}
	v, err := st.store.Get(context.Background(), entity, "u1")
	if err != nil || v.Features["orders"] != float64(n) {
		t.Fatalf("u1 (err %v): %v, want orders %d (the duplicates dropped)", err, v.Features, n)
	}
}
