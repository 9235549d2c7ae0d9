package destination

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
)

func kgoRecord(topic, key, value string) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte(value)}
}

// TestHTTPDestination: a templated http destination against a receiver
// that checks the body, headers and auth, and fails on cue: 500s, a
// timeout, a 429 with Retry-After, a 400 and one that is always down.
// Every change is delivered or dead-lettered with its reason, each
// entity's changes arrive in the order they were written, and the
// metrics count it all.
func TestHTTPDestination(t *testing.T) {
	// The metrics are process-wide: count from their values now, so that
	// -count=N runs agree.
	retries0 := testutil.ToFloat64(retriesTotal.WithLabelValues("braze", KindSegment))
	rejected0 := testutil.ToFloat64(deadLettersTotal.WithLabelValues("braze", KindSegment, ReasonRejected))
	exhausted0 := testutil.ToFloat64(deadLettersTotal.WithLabelValues("braze", KindSegment, ReasonExhausted))
	var e *env
	recs := map[string]segment.Record{} // by change id
	entityOf := func(key string) string { return recs[key].EntityID }
	rc := newReceiver(t, idempotencyKey, func(w http.ResponseWriter, key string, attempt int) int {
		switch r := recs[key]; {
		case r.EntityID == "u1" && attempt <= 2:
			return 500
		case r.EntityID == "u2" && attempt == 1:
			w.Header().Set("Retry-After", "1")
			return 429
		case r.EntityID == "u3" && attempt == 1:
			time.Sleep(400 * time.Millisecond) // past the 150ms timeout
			return 504                         // not seen by the client, which gave up
		case r.EntityID == "u4" && r.At.Second() == 0:
			return 400
		case r.EntityID == "u5":
			return 503
		}
		return 204
	})
	e = newEnv(t, nil, fmt.Sprintf(`
segments:
  - {name: lapsing, rule: 'x > 1'}
  - {name: other, rule: 'x > 1'}
destinations:
  - name: braze
    type: http
    url: '%s/users/{{if .Entered}}track{{else}}track{{end}}'
    method: post
    headers: {X-Team: growth}
    auth: {bearer: tok}
    template: '{"external_id": {{json .ID}}, "in_{{.Segment}}": {{.Entered}}, "revenue": {{json .Features.revenue_30d}}, "missing": {{json .Features.nope}}, "at": "{{.At}}", "key": "{{.ChangeID}}", "entity": "{{.Entity}}", "change": "{{.Change}}", "reason": "{{.Reason}}"}'
    segments: [lapsing]
    max_retries: 3
    timeout: 150ms
    concurrency: 4
`, rc.srv.URL))
	var all []segment.Record
	order := map[string][]string{} // entity -> change ids in the order written
	for n := range 3 {
		for _, u := range []string{"u1", "u2", "u3", "u4", "u5", "u6"} {
			r := change("lapsing", u, n%2 == 0, n, map[string]any{"revenue_30d": 12.5 + float64(n)})
			recs[r.ID] = r
			all = append(all, r)
			order[u] = append(order[u], r.ID)
		}
	}
	ignored := change("other", "u1", true, 9, nil)
	e.produce(append(all, ignored)...)
	e.run()

	// u4's first change is refused (400); u5's three are down for good.
	dls := e.deadLetters(kafka.DestinationsDeadTopic(e.cfg.Kafka), 4)
	reasons := map[string]int{}
	for _, dl := range dls {
		r := recs[dl.ChangeID]
		if dl.Destination != "braze" || dl.Type != "http" || dl.Segment != "lapsing" || dl.URL != rc.srv.URL+"/users/{{if .Entered}}track{{else}}track{{end}}" ||
			dl.Topic != e.cfg.Kafka.Topics.Segments || dl.Error == "" || dl.First.IsZero() || dl.Dead.Before(dl.First) {
			t.Errorf("dead letter %+v", dl)
		}
		got, err := segment.DecodeRecord(dl.Record)
		if err != nil || got.ID != dl.ChangeID {
			t.Errorf("dead letter's record %s: %v", dl.Record, err)
		}
		switch {
		case r.EntityID == "u4" && dl.Reason == ReasonRejected && dl.Status == 400 && dl.Attempts == 1:
		case r.EntityID == "u5" && dl.Reason == ReasonExhausted && dl.Status == 503 && dl.Attempts == 4:
		default:
			t.Errorf("unexpected dead letter for %s: %+v", r.EntityID, dl)
		}
		reasons[dl.Reason]++
	}
	want := len(all) - 4
	testenv.WaitFor(t, 30*time.Second, "every other change delivered", func() bool { return len(distinctOK(rc)) >= want })

	delivered := map[string][]string{}
	for _, h := range rc.ok() {
		if recs[h.key].ID == "" {
			t.Fatalf("delivered a change not written (or of another segment): key %q body %s", h.key, h.body)
		}
		u := entityOf(h.key)
		if l := delivered[u]; len(l) == 0 || l[len(l)-1] != h.key {
			delivered[u] = append(delivered[u], h.key)
		}
		r := recs[h.key]
		var body map[string]any
		if err := json.Unmarshal(h.body, &body); err != nil {
			t.Fatalf("body %s: %v", h.body, err)
		}
		wantBody := map[string]any{
			"external_id": r.EntityID, "in_lapsing": r.Change == "enter", "revenue": r.Features["revenue_30d"], "missing": nil,
			"at": r.At.Format(time.RFC3339Nano), "key": r.ID, "entity": "user", "change": r.Change, "reason": "",
		}
		if fmt.Sprint(body) != fmt.Sprint(wantBody) {
			t.Errorf("body %v, want %v", body, wantBody)
		}
		if h.path != "/users/track" {
			t.Errorf("path %s", h.path)
		}
		if h.header.Get("Authorization") != "Bearer tok" || h.header.Get("X-Team") != "growth" || h.header.Get("Content-Type") != "application/json" {
			t.Errorf("headers %v", h.header)
		}
	}
	for u, ids := range order {
		var kept []string
		for _, id := range ids {
			if u == "u5" || (u == "u4" && recs[id].At.Second() == 0) {
				continue
			}
			kept = append(kept, id)
		}
		if !slices.Equal(delivered[u], kept) {
			t.Errorf("%s: delivered %v, want in the order written %v", u, delivered[u], kept)
		}
	}
	// Each retry repeats the same key: u1 took three tries for each change.
	tries := map[string]int{}
	for _, h := range rc.snapshot() {
		tries[h.key]++
	}
	for _, id := range order["u1"] {
		if tries[id] != 3 {
			t.Errorf("u1 change %s: %d requests, want 3 (two 500s, then 204)", id, tries[id])
		}
	}
	if got := testutil.ToFloat64(deliveredTotal.WithLabelValues("braze", KindSegment)); got < float64(want) {
		t.Errorf("pulse_destination_delivered_total = %v, want at least %d", got, want)
	}
	// u1: 2 retries x 3 changes, u2 and u3: 1 x 3, u5: 3 x 3.
	if got := testutil.ToFloat64(retriesTotal.WithLabelValues("braze", KindSegment)) - retries0; got != 6+3+3+9 {
		t.Errorf("pulse_destination_retries_total = %v, want 21", got)
	}
	if a, b := testutil.ToFloat64(deadLettersTotal.WithLabelValues("braze", KindSegment, ReasonRejected))-rejected0, testutil.ToFloat64(deadLettersTotal.WithLabelValues("braze", KindSegment, ReasonExhausted))-exhausted0; a != 1 || b != 3 {
		t.Errorf("dead letters: rejected %v, exhausted %v", a, b)
	}
	if n := testutil.CollectAndCount(deliverySeconds, "pulse_destination_delivery_seconds"); n == 0 {
		t.Error("no delivery latency observed")
	}
	testenv.WaitFor(t, 30*time.Second, "lag 0", func() bool { return testutil.ToFloat64(lagRecords.WithLabelValues("braze")) == 0 })
}

// distinctOK is the keys answered 2xx.
func distinctOK(rc *receiver) map[string]bool {
	out := map[string]bool{}
	for _, h := range rc.ok() {
		out[h.key] = true
	}
	return out
}

// TestWebhookDestination: the signed webhook as a destination: the body is
// the record as on the topic, the signature verifies with the secret, and
// the delivery header is the change id.
func TestWebhookDestination(t *testing.T) {
	rc := newReceiver(t, func(r *http.Request, _ []byte) string { return r.Header.Get(DeliveryHeader) }, nil)
	e := newEnv(t, nil, fmt.Sprintf(`
segments:
  - {name: vip, rule: 'x > 1'}
destinations:
  - {name: hook, type: webhook, url: %q, secret: s3cret, segments: ["v*"], headers: {X-Env: test}}
`, rc.srv.URL))
	recs := []segment.Record{change("vip", "a", true, 0, nil), change("vip", "b", true, 1, nil), change("vip", "a", false, 2, nil)}
	e.produce(recs...)
	e.run()
	testenv.WaitFor(t, 30*time.Second, "3 deliveries", func() bool { return len(distinctOK(rc)) == 3 })
	for _, h := range rc.ok() {
		if err := Verify("s3cret", h.header, h.body, time.Now(), time.Minute); err != nil {
			t.Errorf("signature: %v", err)
		}
		r, err := segment.DecodeRecord(h.body)
		if err != nil || r.ID != h.key || h.header.Get(ChangeHeader) != r.Change || h.header.Get(SegmentHeader) != "vip" ||
			h.header.Get(AttemptHeader) != "1" || h.header.Get("X-Env") != "test" {
			t.Errorf("delivery %s %v: %v", h.body, h.header, err)
		}
	}
}

// TestPauseResume: the admin API needs an admin key and answers JSON
// errors; a paused destination delivers nothing until resumed, then
// everything.
func TestPauseResume(t *testing.T) {
	rc := newReceiver(t, idempotencyKey, nil)
	e := newEnv(t, nil, fmt.Sprintf(`
segments:
  - {name: vip, rule: 'x > 1'}
destinations:
  - {name: crm, type: http, url: %q, template: '{"id": {{json .ID}}}', segments: [vip]}
`, rc.srv.URL))
	svc, _ := e.run()
	admin := e.serveAdmin(svc)
	f := func(method, path, key string, status int, body string) {
		t.Helper()
		got, b := call(t, method, admin+path, key)
		if got != status || !strings.Contains(b, body) {
			t.Fatalf("%s %s: %d %s, want %d with %s", method, path, got, b, status, body)
		}
	}
	f("POST", "/v1/destinations/crm/pause", "", 401, `{"success":false,"error":"missing API key"}`)
	f("POST", "/v1/destinations/crm/pause", "nope", 401, `"error":"unknown API key"`)
	f("POST", "/v1/destinations/crm/pause", "read-key", 403, `"error":"API key lacks the scope for this call (needs admin)"`)
	f("POST", "/v1/destinations/nope/pause", "admin-key", 404, `"error":"no destination named nope"`)
	f("GET", "/v1/destinations/crm/pause", "admin-key", 405, `"error":"use POST"`)
	f("POST", "/v1/destinations/crm/stop", "admin-key", 404, `"success":false`)
	f("GET", "/healthz", "", 200, `{"ok":true}`)

	f("POST", "/v1/destinations/crm/pause", "admin-key", 200, `{"name":"crm","paused":true}`)
	f("GET", "/v1/destinations", "admin-key", 200, `"name":"crm","type":"http","segments":["vip"],"group":"pulse-destination-crm","paused":true`)
	if testutil.ToFloat64(pausedGauge.WithLabelValues("crm")) != 1 {
		t.Error("pulse_destination_paused is not 1 while paused")
	}
	e.produce(change("vip", "a", true, 0, nil), change("vip", "b", true, 1, nil))
	time.Sleep(500 * time.Millisecond) // time enough to deliver, were it not paused
	if n := len(rc.snapshot()); n != 0 {
		t.Fatalf("%d requests while paused", n)
	}
	f("POST", "/v1/destinations/crm/resume", "admin-key", 200, `{"name":"crm","paused":false}`)
	testenv.WaitFor(t, 30*time.Second, "deliveries after resume", func() bool { return len(distinctOK(rc)) == 2 })
	if testutil.ToFloat64(pausedGauge.WithLabelValues("crm")) != 0 {
		t.Error("pulse_destination_paused is not 0 after resume")
	}
}

// TestSegmentAPIBatches: the segment sink's /v1/batch body, with a
// records-per-second limit that caps each request at its burst.
func TestSegmentAPIBatches(t *testing.T) {
	type call struct {
		Type       string         `json:"type"`
		Event      string         `json:"event"`
		UserID     string         `json:"userId"`
		MessageID  string         `json:"messageId"`
		Timestamp  time.Time      `json:"timestamp"`
		Properties map[string]any `json:"properties"`
		Traits     map[string]any `json:"traits"`
	}
	var bad []string
	rc := newReceiver(t, func(r *http.Request, body []byte) string {
		var b struct{ Batch []call }
		if err := json.Unmarshal(body, &b); err != nil || r.URL.Path != "/v1/batch" {
			bad = append(bad, fmt.Sprintf("%s %s: %v", r.URL.Path, body, err))
		}
		if user, _, _ := r.BasicAuth(); user != "wk" {
			bad = append(bad, "write key "+user)
		}
		return string(body)
	}, nil)
	e := newEnv(t, nil, fmt.Sprintf(`
segments:
  - {name: big_spenders, rule: 'x > 1'}
destinations:
  - name: crm
    type: segment
    url: %s
    write_key: wk
    identify: true
    segments: [big_spenders]
    concurrency: 2
    rate_limit: {records_per_second: 3, requests_per_second: 100}
`, rc.srv.URL))
	var recs []segment.Record
	byID := map[string]segment.Record{}
	for i := range 7 {
		r := change("big_spenders", fmt.Sprint("u", i), i%3 != 0, i, nil)
		recs = append(recs, r)
		byID[r.ID] = r
	}
	// A person deleted on request: its exit says so, with no identify.
	gone := change("big_spenders", "gone", false, 7, nil)
	gone.Reason = segment.ReasonDeleted
	recs = append(recs, gone)
	byID[gone.ID] = gone
	e.produce(recs...)
	e.run()
	seen := map[string]int{}
	testenv.WaitFor(t, 30*time.Second, "every change sent", func() bool {
		clear(seen)
		for _, h := range rc.ok() {
			var b struct{ Batch []call }
			json.Unmarshal(h.body, &b)
			if len(b.Batch) > 2*3 {
				t.Fatalf("a request of %d calls: over the 3 records/s burst", len(b.Batch))
			}
			for _, c := range b.Batch {
				seen[c.Type+"/"+c.MessageID]++
				id := strings.TrimSuffix(c.MessageID, "-identify")
				r := byID[id]
				entered := r.Change == "enter"
				props := map[string]any{"audience_key": "big_spenders", "big_spenders": entered}
				if r.Reason != "" {
					props["reason"] = r.Reason
				}
				switch {
				case c.Type == "track" && c.MessageID == r.ID && c.UserID == r.EntityID && c.Timestamp.Equal(r.At) &&
					c.Event == map[bool]string{true: "Audience Entered", false: "Audience Exited"}[entered] &&
					fmt.Sprint(c.Properties) == fmt.Sprint(props):
				case c.Type == "identify" && c.MessageID == r.ID+"-identify" && c.UserID == r.EntityID && r.Reason == "" &&
					fmt.Sprint(c.Traits) == fmt.Sprint(map[string]any{"big_spenders": entered}):
				default:
					t.Fatalf("call %+v for %+v", c, r)
				}
			}
		}
		return len(seen) == 2*len(recs)-1 // the deleted person's exit: a track alone
	})
	if len(bad) > 0 {
		t.Fatalf("bad requests: %v", bad)
	}
}

// TestUndecodable: a value that is no segment record is dead-lettered
// with its position, and what follows is delivered.
func TestUndecodable(t *testing.T) {
	rc := newReceiver(t, idempotencyKey, nil)
	e := newEnv(t, nil, fmt.Sprintf(`
segments:
  - {name: vip, rule: 'x > 1'}
destinations:
  - {name: crm, type: http, url: %q, template: '{}', segments: [vip]}
`, rc.srv.URL))
	e.produce(change("vip", "a", true, 0, nil))
	if err := e.cl.ProduceSync(t.Context(), kgoRecord(e.cfg.Kafka.Topics.Segments, "a", "{not json")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	e.produce(change("vip", "a", false, 1, nil))
	e.run()
	dls := e.deadLetters(kafka.DestinationsDeadTopic(e.cfg.Kafka), 1)
	if dls[0].Reason != ReasonUndecodable || string(dls[0].Value) != "{not json" || dls[0].Record != nil || dls[0].Destination != "crm" || dls[0].Offset != 1 {
		t.Errorf("dead letter %+v", dls[0])
	}
	testenv.WaitFor(t, 30*time.Second, "both changes", func() bool { return len(distinctOK(rc)) == 2 })
}

// TestBackoff: doubling from BaseBackoff with equal jitter, capped; a
// longer Retry-After wins, up to MaxBackoff.
func TestBackoff(t *testing.T) {
	r := NewRunner(nil, nil, Options{Name: "b", BaseBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second})
	f := func(n int, retryAfter, lo, hi time.Duration) {
		t.Helper()
		for range 200 {
			if d := r.backoff(n, retryAfter); d < lo || d > hi {
				t.Fatalf("backoff(%d, %v) = %v, want in [%v, %v]", n, retryAfter, d, lo, hi)
			}
		}
	}
	f(1, 0, 50*time.Millisecond, 100*time.Millisecond)
	f(3, 0, 200*time.Millisecond, 400*time.Millisecond)
	f(20, 0, time.Second, 2*time.Second)
	f(1, time.Second, time.Second, time.Second)
	f(1, time.Hour, 2*time.Second, 2*time.Second)
	if d := retryAfter("3", time.Now()); d != 3*time.Second {
		t.Errorf("Retry-After: 3 = %v", d)
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if d := retryAfter(now.Add(7*time.Second).Format(http.TimeFormat), now); d != 7*time.Second {
		t.Errorf("Retry-After as a date = %v", d)
	}
}

// TestRateLimits: the limits of the config are the runner's.
func TestRateLimits(t *testing.T) {
	rt := &Route{Name: "r", BatchSize: 500, RequestsPerSecond: 50, RecordsPerSecond: 200}
	NewRunner(nil, []*Route{rt}, Options{Name: "r"})
	if rt.requests.Limit() != 50 || rt.records.Limit() != 200 || rt.BatchSize != 200 {
		t.Errorf("limits %v %v, batch %d", rt.requests.Limit(), rt.records.Limit(), rt.BatchSize)
	}
}

var fqNameRe = regexp.MustCompile(`fqName: "([^"]+)"`)

// TestMetricsStartAtZero: a new runner's series exist at 0 before any
// delivery, so that dashboards show the zeros and Prometheus's increase()
// counts a destination's first dead letter (a series first seen at 1 has
// grown by nothing).
func TestMetricsStartAtZero(t *testing.T) {
	NewRunner(nil, []*Route{{Name: "zero-route"}}, Options{Name: "zero-runner", Group: "g", DeadTopic: "d"})
	NewRunner(nil, []*Route{{Name: "zero-traits", MatchTrait: func(string) bool { return true }}}, Options{Name: "zero-trait-runner", Group: "g", DeadTopic: "d"})
	// Read what the collectors hold (WithLabelValues would make a missing
	// series on asking).
	have := map[string]float64{}
	for _, c := range []prometheus.Collector{deliveredTotal, retriesTotal, deadLettersTotal, deliverySeconds, pausedGauge, lagRecords} {
		ch := make(chan prometheus.Metric, 1000)
		c.Collect(ch)
		close(ch)
		for m := range ch {
			var pb dto.Metric
			if err := m.Write(&pb); err != nil {
				t.Fatal(err)
			}
			var labels []string
			for _, l := range pb.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := pb.GetCounter().GetValue() + pb.GetGauge().GetValue() + float64(pb.GetHistogram().GetSampleCount())
			name := fqNameRe.FindStringSubmatch(m.Desc().String())[1]
			have[name+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	for _, want := range []string{
		"pulse_destination_delivered_total{destination=zero-route,kind=segment}",
		"pulse_destination_retries_total{destination=zero-route,kind=segment}",
		"pulse_destination_dead_letters_total{destination=zero-route,kind=segment,reason=rejected}",
		"pulse_destination_dead_letters_total{destination=zero-route,kind=segment,reason=retries_exhausted}",
		"pulse_destination_dead_letters_total{destination=zero-runner,kind=segment,reason=undecodable}",
		"pulse_destination_delivery_seconds{destination=zero-route,kind=segment}",
		"pulse_destination_delivered_total{destination=zero-traits,kind=trait}",
		"pulse_destination_retries_total{destination=zero-traits,kind=trait}",
		"pulse_destination_dead_letters_total{destination=zero-traits,kind=trait,reason=rejected}",
		"pulse_destination_dead_letters_total{destination=zero-traits,kind=trait,reason=retries_exhausted}",
		"pulse_destination_dead_letters_total{destination=zero-trait-runner,kind=trait,reason=undecodable}",
		"pulse_destination_delivery_seconds{destination=zero-traits,kind=trait}",
		"pulse_destination_paused{destination=zero-runner}",
		"pulse_destination_lag_records{destination=zero-runner}",
	} {
		v, ok := have[want]
		switch {
		case !ok:
			t.Errorf("%s: no series before any delivery", want)
		case v != 0:
			t.Errorf("%s = %v, want 0", want, v)
		}
	}
	// A trait-only route has no segment series.
	if _, ok := have["pulse_destination_delivered_total{destination=zero-traits,kind=segment}"]; ok {
		t.Error("a trait-only destination has segment series")
	}
}
