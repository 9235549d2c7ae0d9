package importer_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/importer"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// ordersCSV is a shop's export: two of its five rows are bad (no
// customer; a date in another format).
const ordersCSV = `order_id,customer_id,total,coupon,created_at
o1,c1,19.90,WINTER,2026-11-30 10:00:00
o2,,5.00,,2026-11-30 10:05:00
o3,c2,120,,2026-11-30 11:00:00
o4,c1,7.5,,30/11/2026
o5,c3,42,,2026-12-01 09:30:00
`

const ordersMapping = `userId: customer_id
event: "Order Completed"
properties.revenue: total
properties.coupon: coupon
properties.order_id: order_id
timestamp: created_at
timestampFormat: "2006-01-02 15:04:05"
`

// TestImportTwice imports an orders CSV twice into a real Kafka broker:
// each good row lands with the same messageId both times (so the stream's
// messageId dedupe counts it once), keyed by its user and with its own
// time; the bad rows are in the report with row, column and reason, in
// the dead-letter topic, and make the error a RefusedError (exit code 2).
func TestImportTwice(t *testing.T) {
	brokers := testenv.Kafka(t)
	events, invalid := testenv.Topic(t, "import-events"), testenv.Topic(t, "import-invalid")
	path := filepath.Join(t.TempDir(), "orders.csv")
	if err := os.WriteFile(path, []byte(ordersCSV), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := importer.ParseMapping([]byte(ordersMapping))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kafka.NewClient(config.Kafka{Brokers: brokers, ClientID: "import-test"}, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), 4, 1, nil, events, invalid); err != nil {
		t.Fatal(err)
	}

	var reports []string
	for run := 0; run < 2; run++ {
		var report bytes.Buffer
		s, err := importer.Import(context.Background(), cl, []string{path}, importer.Options{Events: events, Invalid: invalid, Mapping: m, Report: &report})
		var refused *importer.RefusedError
		if !errors.As(err, &refused) || refused.ExitCode() != 2 || refused.Refused != 2 {
			t.Fatalf("run %d: error %v, want a RefusedError of 2 rows with exit code 2", run, err)
		}
		if s.Rows != 5 || s.Imported != 3 || s.Refused != 2 {
			t.Fatalf("run %d: %s; want 5 rows, 3 imported, 2 refused", run, s)
		}
		reports = append(reports, report.String())
	}
	if reports[0] != reports[1] {
		t.Fatalf("the two runs' reports differ:\n%s\n%s", reports[0], reports[1])
	}
	lines, err := csv.NewReader(strings.NewReader(reports[0])).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"file", "row", "column", "value", "reason"},
		{path, "2", "customer_id", "", "userId or anonymousId is required"},
		{path, "4", "created_at", "30/11/2026", `"30/11/2026" is not a time like 2006-01-02 15:04:05`},
	}
	if len(lines) != len(want) {
		t.Fatalf("report:\n%s\nwant %d lines", reports[0], len(want))
	}
	for i := range want {
		if strings.Join(lines[i], "|") != strings.Join(want[i], "|") {
			t.Fatalf("report line %d = %q, want %q", i, lines[i], want[i])
		}
	}

	recs := consume(t, brokers, events, 6)
	byID := map[string][]*event.Event{}
	for _, r := range recs {
		e, err := event.Unmarshal(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != e.UserID {
			t.Errorf("record key %q, want the user %q", r.Key, e.UserID)
		}
		byID[e.MessageID] = append(byID[e.MessageID], e)
	}
	if len(byID) != 3 {
		t.Fatalf("%d distinct messageIds over two imports, want 3 (one a good row)", len(byID))
	}
	times := map[string]string{}
	for id, es := range byID {
		if len(es) != 2 {
			t.Fatalf("messageId %s: %d records, want one a run", id, len(es))
		}
		e := es[0]
		if e.Event != "Order Completed" || e.Type != event.Track {
			t.Errorf("%s: %s %q, want track Order Completed", id, e.Type, e.Event)
		}
		times[e.Properties["order_id"].(string)] = e.Timestamp.Format(time.RFC3339) + " " + e.UserID
	}
	wantTimes := map[string]string{"o1": "2026-11-30T10:00:00Z c1", "o3": "2026-11-30T11:00:00Z c2", "o5": "2026-12-01T09:30:00Z c3"}
	for o, w := range wantTimes {
		if times[o] != w {
			t.Errorf("order %s: %q, want %q (its own time and user)", o, times[o], w)
		}
	}

	dead := consume(t, brokers, invalid, 4)
	for _, r := range dead {
		d, err := event.DecodeDeadLetter(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if d.Source != "import" || d.Reason != event.ReasonInvalid || (d.Index != 2 && d.Index != 4) {
			t.Errorf("dead letter %+v: want source import, reason invalid, row 2 or 4", d)
		}
		if d.Index == 4 && (d.Field != "created_at" || !strings.Contains(string(d.Event), `"order_id":"o4"`)) {
			t.Errorf("dead letter of row 4: field %q, event %s; want created_at and the row", d.Field, d.Event)
		}
	}
}

// consume reads exactly n records of topic (testenv.ConsumeExactly).
func consume(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	return testenv.ConsumeExactly(t, brokers, topic, n)
}
