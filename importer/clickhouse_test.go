package importer_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/importer"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
)

// chOrdersMapping maps the orders table of docs/import.md.
const chOrdersMapping = `userId: customer_id
event: "Order Completed"
properties.order_id: order_id
properties.revenue: total
properties.coupon: coupon
properties.items: items
timestamp: created_at
`

// TestImportClickHouse imports a query over an orders table in a real
// ClickHouse into a real broker: each row is an event with its columns'
// types (a UInt64 order id over 2^53 keeps its digits as text, a Decimal total
// is a number,
// NULL is no value, an Array stays a list) and its own time; the row with
// no customer is in the report; the same rows in another order get the
// same derived messageIds, so running the query again counts each once.
func TestImportClickHouse(t *testing.T) {
	native, httpAddr := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{native}, Auth: clickhouse.Auth{Database: db, Username: "default"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	ctx := context.Background()
	for _, q := range []string{
		`CREATE TABLE orders (order_id UInt64, customer_id String, total Decimal(12, 2), coupon Nullable(String),
		 items Array(String), created_at DateTime('UTC')) ENGINE = MergeTree ORDER BY order_id`,
		`INSERT INTO orders VALUES
		 (18446744073709551001, 'c1', 19.90, 'WINTER', ['sku1', 'sku2'], '2026-11-30 10:00:00'),
		 (18446744073709551002, '',   5.00,  NULL,     [],               '2026-11-30 10:05:00'),
		 (18446744073709551003, 'c2', 120,   NULL,     ['sku3'],         '2026-11-30 11:00:00')`,
	} {
		// Over HTTP: ClickHouse 18.16 (Debian's) keeps a native INSERT ... VALUES waiting.
		resp, err := http.Post("http://"+httpAddr+"/?database="+db, "text/plain", strings.NewReader(q))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", q, b)
		}
	}
	brokers := testenv.Kafka(t)
	events, invalid := testenv.Topic(t, "ch-events"), testenv.Topic(t, "ch-invalid")
	cl, err := kafka.NewClient(config.Kafka{Brokers: brokers, ClientID: "ch-test"}, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopics(ctx, 1, 1, nil, events, invalid); err != nil {
		t.Fatal(err)
	}
	m, err := importer.ParseMapping([]byte(chOrdersMapping))
	if err != nil {
		t.Fatal(err)
	}
	for _, order := range []string{"ASC", "DESC"} {
		var report bytes.Buffer
		s, err := importer.ImportQuery(ctx, cl, ch, "SELECT * FROM "+db+".orders ORDER BY order_id "+order,
			importer.Options{Events: events, Invalid: invalid, Mapping: m, Report: &report})
		var refused *importer.RefusedError
		if !errors.As(err, &refused) || s.Rows != 3 || s.Imported != 2 || s.Refused != 1 {
			t.Fatalf("%s: %s (err %v); want 3 rows, 2 imported, 1 refused", order, s, err)
		}
		// The row with no customer is the second either way.
		if want := "clickhouse,2,customer_id,,userId or anonymousId is required"; !strings.Contains(report.String(), want) {
			t.Errorf("%s: report:\n%s\nlacks %s", order, report.String(), want)
		}
	}
	got := map[string][]string{}
	for _, r := range consume(t, brokers, events, 4) {
		e, err := event.Unmarshal(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		props, _ := json.Marshal(e.Properties)
		got[e.MessageID] = append(got[e.MessageID], e.UserID+" "+e.Event+" "+e.Timestamp.Format(time.RFC3339Nano)+" "+string(props))
	}
	want := map[string]bool{
		`c1 Order Completed 2026-11-30T10:00:00Z {"coupon":"WINTER","items":["sku1","sku2"],"order_id":"18446744073709551001","revenue":19.9}`: true,
		`c2 Order Completed 2026-11-30T11:00:00Z {"items":["sku3"],"order_id":"18446744073709551003","revenue":120}`:                           true,
	}
	if len(got) != 2 {
		t.Fatalf("%d messageIds over two runs, want 2 (the same rows in another order, the same ids): %v", len(got), got)
	}
	for id, evs := range got {
		if len(evs) != 2 || evs[0] != evs[1] || !want[evs[0]] {
			t.Errorf("%s: %q, want one of %v twice", id, evs, want)
		}
	}

	_, err = importer.ImportQuery(ctx, cl, ch, "SELECT order_id FROM "+db+".orders", importer.Options{Events: events, Invalid: invalid, Mapping: m})
	if err == nil || !strings.Contains(err.Error(), `userId: no column "customer_id"`) {
		t.Fatalf("a mapping naming columns the query lacks: %v", err)
	}
	_, err = importer.ImportQuery(ctx, cl, ch, "SELECT nope FROM "+db+".orders", importer.Options{Events: events, Invalid: invalid})
	if err == nil || !strings.Contains(err.Error(), "cannot run the query") {
		t.Fatalf("a bad query: %v", err)
	}
}
