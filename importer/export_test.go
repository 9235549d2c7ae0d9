package importer_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/importer"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
)

// An Amplitude Export API file (gzip JSON lines, as in its zip), as
// Amplitude writes them: times as UTC date-times, $insert_id or uuid.
const amplitudeExport = `{"server_received_time":"2026-11-30 10:00:01.000000","app":123,"city":"Berlin","user_id":"c1","uuid":"9a1b0c2d-0000-4000-8000-000000000001","event_time":"2026-11-30 10:00:00.123000","platform":"Web","os_version":"120","amplitude_id":987654,"version_name":null,"ip_address":"1.2.3.4","group_properties":{},"user_properties":{"plan":"pro"},"event_type":"Order Completed","library":"amplitude-ts/2.0.0","device_type":"Mac","location_lng":null,"event_id":12,"os_name":"Chrome","groups":{},"event_properties":{"revenue":19.9,"order_id":"o1"},"data":{},"device_id":"d1","language":"English","country":"Germany","session_id":1764496800000,"$insert_id":"ins-1"}
{"user_id":"c2","device_id":"d2","uuid":"9a1b0c2d-0000-4000-8000-000000000002","event_time":"2026-11-30 11:00:00.000000","event_type":"$identify","user_properties":{"$set":{"plan":"free"}},"event_properties":{}}
{"uuid":"9a1b0c2d-0000-4000-8000-000000000003","event_time":"2026-11-30 12:00:00.000000","event_type":"Page Viewed","event_properties":{}}
{"user_id":"c3","event_time":"30/11/2026","event_type":"Page Viewed"}
`

// A PostHog export (a JSON array, as its events export downloads), one
// row of the events table with its properties as JSON text.
const postHogExport = `[
 {"uuid":"0190a000-0000-7000-8000-000000000001","event":"$pageview","properties":{"$current_url":"https://shop.example/x","$lib":"web","$lib_version":"1.2.3"},"distinct_id":"p1","team_id":1,"timestamp":"2026-11-30T10:00:00.123000Z","set":{"email":"p1@example.com"},"elements_chain":""},
 {"uuid":"0190a000-0000-7000-8000-000000000002","event":"Order Completed","properties":"{\"revenue\": 42, \"order_id\": \"o9\"}","distinct_id":"p2","timestamp":"2026-11-30 11:00:00.000000"},
 {"event":"$identify","distinct_id":"p3","properties":{"$anon_distinct_id":"anon-3","$set":{"plan":"pro"}},"timestamp":"2026-11-30T12:00:00Z"},
 {"uuid":"0190a000-0000-7000-8000-000000000004","event":"Signed Up","properties":{},"timestamp":"2026-11-30T13:00:00Z"}
]`

// A Segment archive: JSON lines of Segment events, as its S3 destination
// writes them; their fields map themselves.
const segmentExport = `{"type":"track","event":"Order Completed","userId":"s1","messageId":"seg-1","properties":{"revenue":5},"context":{"library":{"name":"analytics.js"}},"timestamp":"2026-11-30T10:00:00Z","receivedAt":"2026-11-30T10:00:01Z","projectId":"p","version":2}
{"type":"identify","userId":"s2","traits":{"email":"s2@example.com"},"timestamp":"2026-11-30T11:00:00Z"}
`

// TestImportExports imports an Amplitude export (gzip JSON lines), a
// PostHog export (a JSON array) and a Segment archive (JSON lines), their
// formats guessed from their fields, into a real broker: each event has
// its ids, name, type, properties, traits and own time; rows with no id
// of their own get the same derived messageId on a second import; the bad
// rows are reported with their field and reason.
func TestImportExports(t *testing.T) {
	brokers := testenv.Kafka(t)
	events, invalid := testenv.Topic(t, "export-events"), testenv.Topic(t, "export-invalid")
	dir := t.TempDir()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(amplitudeExport))
	zw.Close()
	files := map[string][]byte{"amplitude-2026113010.json.gz": gz.Bytes(), "posthog.json": []byte(postHogExport), "segment.jsonl": []byte(segmentExport)}
	var paths []string
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	cl, err := kafka.NewClient(config.Kafka{Brokers: brokers, ClientID: "export-test"}, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), 1, 1, nil, events, invalid); err != nil {
		t.Fatal(err)
	}
	var report bytes.Buffer
	for run := 0; run < 2; run++ {
		report.Reset()
		s, err := importer.Import(context.Background(), cl, paths, importer.Options{Events: events, Invalid: invalid, Report: &report})
		if s.Rows != 10 || s.Imported != 7 || s.Refused != 3 || err == nil {
			t.Fatalf("run %d: %s (err %v); want 10 rows, 7 imported, 3 refused", run, s, err)
		}
	}
	for _, want := range []string{
		"amplitude-2026113010.json.gz,3,user_id,,required: user_id or device_id",
		`amplitude-2026113010.json.gz,4,event_time,30/11/2026,"""30/11/2026"" is not a time like 2006-01-02 15:04:05.999999"`,
		"posthog.json,4,distinct_id,,required",
	} {
		if !strings.Contains(report.String(), want) {
			t.Errorf("report:\n%s\nlacks %s", report.String(), want)
		}
	}

	byID := map[string][]*event.Event{}
	for _, r := range consume(t, brokers, events, 14) {
		e, err := event.Unmarshal(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		byID[e.MessageID] = append(byID[e.MessageID], e)
	}
	if len(byID) != 7 {
		t.Fatalf("%d messageIds over two imports, want 7 (each row's, twice)", len(byID))
	}
	got := map[string]string{}
	for id, es := range byID {
		if len(es) != 2 {
			t.Errorf("%s: %d records, want 2", id, len(es))
		}
		e := es[0]
		if strings.HasPrefix(id, "import-") {
			id = "derived"
		}
		got[e.UserID+" "+string(e.Type)+" "+e.Event] = id + " " + e.Timestamp.Format(time.RFC3339Nano) + " " + e.AnonymousID +
			" props=" + text(e.Properties) + " traits=" + text(e.Traits) + ctxTraits(e)
	}
	want := map[string]string{
		"c1 track Order Completed": `ins-1 2026-11-30T10:00:00.123Z d1 props={"order_id":"o1","revenue":19.9} traits={"plan":"pro"}`,
		"c2 identify ":             `9a1b0c2d-0000-4000-8000-000000000002 2026-11-30T11:00:00Z d2 props= traits={"plan":"free"}`,
		"p1 page ":                 `0190a000-0000-7000-8000-000000000001 2026-11-30T10:00:00.123Z  props={"$current_url":"https://shop.example/x","$lib":"web","$lib_version":"1.2.3"} traits={"email":"p1@example.com"}`,
		"p2 track Order Completed": `0190a000-0000-7000-8000-000000000002 2026-11-30T11:00:00Z  props={"order_id":"o9","revenue":42} traits=`,
		"p3 identify ":             `derived 2026-11-30T12:00:00Z anon-3 props= traits={"plan":"pro"}`,
		"s1 track Order Completed": `seg-1 2026-11-30T10:00:00Z  props={"revenue":5} traits=`,
		"s2 identify ":             `derived 2026-11-30T11:00:00Z  props= traits={"email":"s2@example.com"}`,
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s:\n got %s\nwant %s", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("events %v, want %d", got, len(want))
	}
}

// text is v as JSON; nothing for an empty map.
func text(v map[string]any) string {
	if v == nil {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func ctxTraits(e *event.Event) string {
	m, _ := e.Context["traits"].(map[string]any)
	return text(m)
}
