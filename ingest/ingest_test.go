package ingest_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/ingest"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const testConfig = `
keys:
  - name: app
    key: wk
    scopes: [write]
  - name: reader
    key: rk
    scopes: [read]
  - name: slow
    key: limited
    scopes: [write]
    rate_limit: 1
    burst: 2
ingest:
  produce_timeout: 700ms
`

// harness is an ingest server on a real TCP port in front of a broker.
type harness struct {
	t      *testing.T
	cfg    *config.Config
	url    string
	client *kgo.Client
	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T, brokers []string, topicPrefix string, kafkaOpts ...kgo.Opt) *harness {
	t.Helper()
	return newHarnessTuned(t, brokers, topicPrefix, nil, kafkaOpts...)
}

// newHarnessTuned is newHarness with tune applied to the config before
// the server starts.
func newHarnessTuned(t *testing.T, brokers []string, topicPrefix string, tune func(*config.Config), kafkaOpts ...kgo.Opt) *harness {
	t.Helper()
	return newHarnessServer(t, brokers, topicPrefix, tune, nil, kafkaOpts...)
}

// newHarnessServer is newHarnessTuned with setup applied to the server
// before it serves.
func newHarnessServer(t *testing.T, brokers []string, topicPrefix string, tune func(*config.Config), setup func(*ingest.Server), kafkaOpts ...kgo.Opt) *harness {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(cfg)
	}
	cfg.Kafka.Brokers = brokers
	if topicPrefix != "" {
		tp := &cfg.Kafka.Topics
		tp.Events, tp.Invalid = topicPrefix+".events", topicPrefix+".invalid"
		tp.Segments, tp.Predictions, tp.State = topicPrefix+".segments", topicPrefix+".predictions", topicPrefix+".state"
	}
	cl, err := kafka.NewClient(cfg.Kafka, append(kafka.ProducerOpts(), kafkaOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, cfg: cfg, url: "http://" + ln.Addr().String(), client: cl, done: make(chan error, 1)}
	sctx, scancel := context.WithCancel(context.Background())
	h.cancel = scancel
	srv := ingest.New(cfg, cl, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if setup != nil {
		setup(srv)
	}
	go func() { h.done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		scancel()
		<-h.done
		cl.Close()
	})
	return h
}

type resp struct {
	status  int
	body    map[string]any
	raw     string
	headers http.Header
}

func (h *harness) post(path, body string, opts ...func(*http.Request)) resp {
	h.t.Helper()
	req, err := http.NewRequest("POST", h.url+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, o := range opts {
		o(req)
	}
	return h.do(req)
}

func (h *harness) do(req *http.Request) resp {
	h.t.Helper()
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	out := resp{status: r.StatusCode, raw: string(b), headers: r.Header}
	_ = json.Unmarshal(b, &out.body)
	return out
}

func basic(key string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(key, "") }
}

// consume reads exactly n records of topic (testenv.ConsumeExactly).
func consume(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	return testenv.ConsumeExactly(t, brokers, topic, n)
}

func decodeEvents(t *testing.T, recs []*kgo.Record) map[string]*event.Event {
	t.Helper()
	out := map[string]*event.Event{}
	for _, r := range recs {
		e, err := event.Unmarshal(r.Value)
		if err != nil {
			t.Fatalf("record %s is not a valid event: %v", r.Value, err)
		}
		if string(r.Key) != e.EntityID() {
			t.Fatalf("record key %q, want the entity id %q", r.Key, e.EntityID())
		}
		out[e.MessageID] = e
	}
	return out
}

func embedded(t *testing.T) []string {
	t.Helper()
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	return emb.Addrs()
}

const segmentBatch = `{
  "batch": [
    {"type": "identify", "messageId": "m1", "userId": "612", "traits": {"email": "a@example.com", "country": "US"}},
    {"type": "track", "messageId": "m2", "userId": "612", "event": "Order Completed", "properties": {"revenue": 42.5}, "context": {"ip": "9.9.9.9"}},
    {"type": "track", "messageId": "m3", "anonymousId": "anon-1", "properties": {"revenue": 1}},
    {"type": "page", "messageId": "m4", "anonymousId": "anon-1", "name": "Home"},
    {"type": "alias", "messageId": "m5", "previousId": "anon-1", "userId": "612"}
  ],
  "context": {"library": {"name": "test"}, "ip": "1.2.3.4"},
  "sentAt": "2026-11-22T12:00:00Z"
}`

// ingestSuite is what must hold on any broker: the batch lands keyed by
// entity, the invalid item is dead-lettered with its reason, feature rows
// become identifies.
func ingestSuite(t *testing.T, brokers []string, prefix string) {
	h := newHarness(t, brokers, prefix)

	r := h.post("/v1/batch", segmentBatch, basic("wk"))
	if r.status != 200 {
		t.Fatalf("batch: %d %s", r.status, r.raw)
	}
	rej, _ := r.body["rejected"].([]any)
	if r.body["success"] != true || len(rej) != 1 {
		t.Fatalf("batch answer: %s", r.raw)
	}
	if got := rej[0].(map[string]any); got["index"] != 2.0 || got["error"] != "event: required for track" {
		t.Fatalf("rejected: %v", got)
	}
	events := decodeEvents(t, consume(t, brokers, h.cfg.Kafka.Topics.Events, 4))
	m2 := events["m2"]
	if m2 == nil || m2.Event != "Order Completed" || m2.Properties["revenue"] != 42.5 {
		t.Fatalf("m2: %+v", m2)
	}
	if m2.Context["ip"] != "9.9.9.9" || m2.Context["library"].(map[string]any)["name"] != "test" {
		t.Fatalf("batch context not merged under the item's: %v", m2.Context)
	}
	if events["m4"].EntityID() != "anon-1" || events["m5"].PreviousID != "anon-1" {
		t.Fatalf("page/alias: %+v %+v", events["m4"], events["m5"])
	}
	dl := consume(t, brokers, h.cfg.Kafka.Topics.Invalid, 1)
	d, err := event.DecodeDeadLetter(dl[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if d.Error != "event: required for track" || d.Field != "event" || d.Index != 2 || !strings.Contains(string(d.Event), `"m3"`) || d.KeyName != "app" {
		t.Fatalf("dead letter: %+v", d)
	}

	// Mage-style feature rows, key in the body.
	r = h.post("/v1/stream", `{"api_key":"wk","feature_set":"user/profile_attributes/5","features":[{"id":612,"age":31,"country":"US"},{"id":"u-9","age":20}]}`)
	if r.status != 200 || r.raw != `{"success":1}` {
		t.Fatalf("stream: %d %s", r.status, r.raw)
	}
	all := consume(t, brokers, h.cfg.Kafka.Topics.Events, 6)
	rows := 0
	for _, e := range decodeEvents(t, all) {
		if e.FeatureSet == "" {
			continue
		}
		rows++
		if e.Type != event.Identify || e.FeatureSet != "user/profile_attributes/5" || e.Traits["id"] != nil {
			t.Fatalf("feature row event: %+v", e)
		}
		if e.UserID == "612" && (e.Traits["age"] != 31.0 || e.Traits["country"] != "US") {
			t.Fatalf("row traits: %v", e.Traits)
		}
	}
	if rows != 2 {
		t.Fatalf("got %d feature-row events, want 2", rows)
	}
}

func TestIngestEmbeddedKafka(t *testing.T) {
	ingestSuite(t, embedded(t), "")
}

func TestIngestRealKafka(t *testing.T) {
	ingestSuite(t, testenv.Kafka(t), testenv.Topic(t, "ingest"))
}

func TestSingleEndpoints(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	calls := []struct{ path, body string }{
		{"/v1/track", `{"userId":"1","event":"Signed Up","messageId":"t"}`},
		{"/v1/identify", `{"userId":"1","traits":{"plan":"pro"},"messageId":"i"}`},
		{"/v1/page", `{"anonymousId":"a","name":"Pricing","messageId":"p"}`},
		{"/v1/screen", `{"userId":"1","name":"Home","messageId":"s"}`},
		{"/v1/group", `{"userId":"1","groupId":"g1","messageId":"g"}`},
		{"/v1/alias", `{"userId":"1","previousId":"a","messageId":"al"}`},
	}
	for _, c := range calls {
		r := h.post(c.path, c.body, basic("wk"))
		if r.status != 200 || r.raw != `{"success":true}` {
			t.Fatalf("%s: %d %s", c.path, r.status, r.raw)
		}
	}
	events := decodeEvents(t, consume(t, brokers, "pulse.events", len(calls)))
	want := map[string]event.Type{"t": event.Track, "i": event.Identify, "p": event.Page, "s": event.Screen, "g": event.Group, "al": event.Alias}
	for id, typ := range want {
		if events[id] == nil || events[id].Type != typ {
			t.Fatalf("message %s: %+v, want type %s", id, events[id], typ)
		}
	}
}

func TestAuthForms(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	// Basic auth with the key as user name (Segment libraries).
	if r := h.post("/v1/track", `{"userId":"1","event":"a"}`, basic("wk")); r.status != 200 {
		t.Fatalf("basic: %d %s", r.status, r.raw)
	}
	// writeKey in the body, single and batch.
	if r := h.post("/v1/track", `{"writeKey":"wk","userId":"1","event":"a"}`); r.status != 200 {
		t.Fatalf("body key: %d %s", r.status, r.raw)
	}
	if r := h.post("/v1/batch", `{"writeKey":"wk","batch":[{"type":"track","userId":"1","event":"a"}]}`); r.status != 200 {
		t.Fatalf("batch body key: %d %s", r.status, r.raw)
	}
	consume(t, brokers, "pulse.events", 3)
}

func TestGzip(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(segmentBatch))
	zw.Close()
	r := h.post("/v1/batch", buf.String(), basic("wk"), func(r *http.Request) { r.Header.Set("Content-Encoding", "gzip") })
	if r.status != 200 {
		t.Fatalf("gzip batch: %d %s", r.status, r.raw)
	}
	consume(t, brokers, "pulse.events", 4)
}

func TestErrors(t *testing.T) {
	h := newHarness(t, embedded(t), "")
	bigEvent := `{"userId":"1","event":"a","properties":{"p":"` + strings.Repeat("x", 33<<10) + `"}}`
	items := make([]string, 2501)
	for i := range items {
		items[i] = `{"type":"track","userId":"1","event":"a"}`
	}
	var bigBody strings.Builder
	bigBody.WriteString(`{"batch":[`)
	// Over the 500 KB limit but within what the server reads before
	// answering (limit + 64 KiB), so the answer is always our JSON 413: far
	// bigger bodies are cut off mid-upload, and a client may see a reset.
	for i := 0; i < 26; i++ {
		if i > 0 {
			bigBody.WriteByte(',')
		}
		bigBody.WriteString(`{"type":"track","userId":"1","event":"a","properties":{"p":"` + strings.Repeat("y", 20<<10) + `"}}`)
	}
	bigBody.WriteString(`]}`)
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	zw.Write([]byte(`{"batch":[{"type":"track","userId":"1","event":"` + strings.Repeat("z", 600<<10) + `"}]}`))
	zw.Close()

	cases := []struct {
		name, path, body string
		opts             []func(*http.Request)
		status           int
		errPart          string
	}{
		{"bad json", "/v1/batch", `{"batch":[`, []func(*http.Request){basic("wk")}, 400, "invalid JSON"},
		{"not an object", "/v1/track", `[1]`, []func(*http.Request){basic("wk")}, 400, "invalid JSON"},
		{"no key", "/v1/track", `{"userId":"1","event":"a"}`, nil, 401, "missing API key"},
		{"unknown key", "/v1/track", `{"userId":"1","event":"a"}`, []func(*http.Request){basic("nope")}, 401, "unknown API key"},
		{"read key cannot write", "/v1/track", `{"userId":"1","event":"a"}`, []func(*http.Request){basic("rk")}, 403, "lacks the scope"},
		{"invalid single event", "/v1/track", `{"userId":"1"}`, []func(*http.Request){basic("wk")}, 400, "event: required for track"},
		{"event over 32KB", "/v1/track", bigEvent, []func(*http.Request){basic("wk")}, 413, "byte limit"},
		{"batch over 2500", "/v1/batch", `{"batch":[` + strings.Join(items, ",") + `]}`, []func(*http.Request){basic("wk")}, 413, "2501 events, over the 2500 event limit"},
		{"body over 500KB", "/v1/batch", bigBody.String(), []func(*http.Request){basic("wk")}, 413, "limit"},
		{"gzip over 500KB", "/v1/batch", bomb.String(), []func(*http.Request){basic("wk"), func(r *http.Request) { r.Header.Set("Content-Encoding", "gzip") }}, 413, "decompressed request body"},
		{"bad gzip", "/v1/batch", "not gzip", []func(*http.Request){basic("wk"), func(r *http.Request) { r.Header.Set("Content-Encoding", "gzip") }}, 400, "invalid gzip"},
		// A JSON body is taken whatever its label (TestLenientContentType);
		// a form is not JSON (issue 17 changed this case from 415).
		{"form body", "/v1/track", `userId=1&event=a`, []func(*http.Request){basic("wk"), func(r *http.Request) { r.Header.Set("Content-Type", "application/x-www-form-urlencoded") }}, 400, "the body is not JSON (Content-Type application/x-www-form-urlencoded"},
		{"unknown endpoint", "/v1/nope", `{}`, []func(*http.Request){basic("wk")}, 404, "no such endpoint"},
		{"stream without id", "/v1/stream", `{"api_key":"wk","feature_set":"user/x/1"}`, nil, 400, "features: required"},
	}
	// The problems with one field name it apart too, for a program; the
	// others name none.
	fields := map[string]string{"invalid single event": "event", "batch over 2500": "batch", "stream without id": "features"}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.post(c.path, c.body, c.opts...)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.raw)
			}
			msg, _ := r.body["error"].(string)
			if r.body["success"] != false || !strings.Contains(msg, c.errPart) {
				t.Fatalf("body %s: want success=false and an error containing %q", r.raw, c.errPart)
			}
			field, _ := r.body["field"].(string)
			reason, _ := r.body["reason"].(string)
			if field != fields[c.name] || (field != "" && msg != field+": "+reason) {
				t.Fatalf("body %s: want field %q, and the error its field and reason", r.raw, fields[c.name])
			}
		})
	}

	// GET is not allowed.
	req, _ := http.NewRequest("GET", h.url+"/v1/track", nil)
	if r := h.do(req); r.status != 405 {
		t.Fatalf("GET: %d", r.status)
	}
}

func TestRateLimit(t *testing.T) {
	h := newHarness(t, embedded(t), "")
	var last resp
	for i := 0; i < 5; i++ {
		last = h.post("/v1/track", `{"userId":"1","event":"a"}`, basic("limited"))
		if last.status == 429 {
			break
		}
	}
	if last.status != 429 || last.headers.Get("Retry-After") == "" {
		t.Fatalf("after a burst of 2 at 1/s: %d %s, Retry-After %q", last.status, last.raw, last.headers.Get("Retry-After"))
	}
	if !strings.Contains(last.body["error"].(string), "rate limit") {
		t.Fatalf("429 body: %s", last.raw)
	}
}

func TestKafkaDown(t *testing.T) {
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, emb.Addrs(), "")
	if r := h.post("/v1/track", `{"userId":"1","event":"a"}`, basic("wk")); r.status != 200 {
		t.Fatalf("before: %d %s", r.status, r.raw)
	}
	emb.Close()
	start := time.Now()
	r := h.post("/v1/track", `{"userId":"1","event":"a"}`, basic("wk"))
	if r.status != 503 || r.headers.Get("Retry-After") == "" {
		t.Fatalf("kafka down: %d %s Retry-After=%q", r.status, r.raw, r.headers.Get("Retry-After"))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("503 took %v; the produce timeout is 700ms", d)
	}
	// readyz follows within its check interval.
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest("GET", h.url+"/readyz", nil)
		if h.do(req).status == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("readyz still ready with kafka down")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	h := newHarness(t, embedded(t), "")
	h.post("/v1/batch", segmentBatch, basic("wk"))
	get := func(path string) resp {
		req, _ := http.NewRequest("GET", h.url+path, nil)
		return h.do(req)
	}
	if r := get("/healthz"); r.status != 200 {
		t.Fatalf("healthz %d", r.status)
	}
	deadline := time.Now().Add(5 * time.Second)
	for get("/readyz").status != 200 {
		if time.Now().After(deadline) {
			t.Fatal("readyz never ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := get("/metrics").raw
	for _, want := range []string{
		`pulse_ingest_requests_total{code="200",endpoint="/v1/batch"}`,
		`pulse_ingest_events_total{type="track"}`,
		`pulse_ingest_rejected_total{reason="event"}`,
		`pulse_ingest_request_bytes_total`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The timings observed the batch posted above, not just registered.
	for _, count := range []string{
		`pulse_ingest_produce_seconds_count`,
		`pulse_ingest_ack_wake_seconds_count`,
		`pulse_ingest_normalize_seconds_count`,
		`pulse_kafka_produce_request_seconds_count{stage="queued"}`,
		`pulse_kafka_produce_request_seconds_count{stage="write"}`,
		`pulse_kafka_produce_request_seconds_count{stage="response"}`,
	} {
		if n := testenv.MetricText(m, count); n < 1 {
			t.Errorf("%s = %v, want at least 1", count, n)
		}
	}
}

// TestBatchOnePass sends batches that take event.NormalizeBatch's one-pass
// path (no batch-level context), one after another so that the second
// reuses the first's pooled records: every record must arrive intact, keyed
// by its entity, and the invalid item must be dead-lettered.
func TestBatchOnePass(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	for round := 0; round < 3; round++ {
		body := fmt.Sprintf(`{"batch": [
		  {"type": "track", "messageId": "r%[1]d-a", "userId": "u%[1]d", "event": "Order Completed", "properties": {"revenue": %[1]d.5, "items": [1, 2]}},
		  {"type": "track", "messageId": "r%[1]d-b", "anonymousId": "anon-%[1]d"},
		  {"type":"identify","messageId":"r%[1]d-c","userId":%[1]d,"traits":{"plan":"pro\u00e9"}}
		], "sentAt": "2026-11-22T12:00:00Z"}`, round)
		r := h.post("/v1/batch", body, basic("wk"))
		rej, _ := r.body["rejected"].([]any)
		if r.status != 200 || len(rej) != 1 || rej[0].(map[string]any)["index"] != 1.0 {
			t.Fatalf("round %d: %d %s", round, r.status, r.raw)
		}
	}
	events := decodeEvents(t, consume(t, brokers, "pulse.events", 6))
	for round := 0; round < 3; round++ {
		a, c := events[fmt.Sprintf("r%d-a", round)], events[fmt.Sprintf("r%d-c", round)]
		if a == nil || a.UserID != fmt.Sprintf("u%d", round) || a.Properties["revenue"] != float64(round)+0.5 || a.SentAt.IsZero() {
			t.Fatalf("round %d track: %+v", round, a)
		}
		if c == nil || c.UserID != fmt.Sprint(round) || c.Traits["plan"] != "proé" {
			t.Fatalf("round %d identify: %+v", round, c)
		}
	}
	dl := consume(t, brokers, "pulse.events.invalid", 3)
	if d, err := event.DecodeDeadLetter(dl[0].Value); err != nil || d.Error != "event: required for track" || d.Index != 1 {
		t.Fatalf("dead letter %s: %v", dl[0].Value, err)
	}
}
