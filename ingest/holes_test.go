package ingest_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// TestKeyBeforeBody: an unauthenticated caller is answered 401 before its
// body is read: bodies that would fail to parse, or to decompress, get
// 401, not 400, and a valid batch is never normalised.
func TestKeyBeforeBody(t *testing.T) {
	h := newHarness(t, embedded(t), "")
	gz := func(r *http.Request) { r.Header.Set("Content-Encoding", "gzip") }
	for _, c := range []struct {
		name, path, body string
		opts             []func(*http.Request)
		err              string
	}{
		{"no key, broken batch", "/v1/batch", `{"batch":[`, nil, "missing API key"},
		{"no key, broken rows", "/v1/stream", `{"features":[`, nil, "missing API key"},
		{"unknown key, broken batch", "/v1/batch", `{"batch":[`, []func(*http.Request){basic("nope")}, "unknown API key"},
		{"unknown key, not gzip", "/v1/batch", "not gzip", []func(*http.Request){basic("nope"), gz}, "unknown API key"},
		{"unknown body key, broken batch", "/v1/batch", `{"writeKey":"nope","batch":[`, nil, "unknown API key"},
		{"unknown body key, broken rows", "/v1/stream", `{"api_key":"nope","features":[`, nil, "unknown API key"},
	} {
		r := h.post(c.path, c.body, c.opts...)
		if r.status != 401 || !strings.Contains(r.raw, c.err) {
			t.Errorf("%s: %d %s, want 401 %s", c.name, r.status, r.raw, c.err)
		}
	}
	normalized := func() float64 {
		req, _ := http.NewRequest("GET", h.url+"/metrics", nil)
		return testenv.MetricText(h.do(req).raw, "pulse_ingest_normalize_seconds_count")
	}
	before := normalized()
	for _, key := range []func(*http.Request){basic("nope"), basic("rk")} {
		if r := h.post("/v1/batch", segmentBatch, key); r.status != 401 && r.status != 403 {
			t.Fatalf("a valid batch with a bad key: %d %s", r.status, r.raw)
		}
	}
	if r := h.post("/v1/batch", `{"writeKey":"nope",`+segmentBatch[1:]); r.status != 401 {
		t.Fatalf("a valid batch with a bad body key: %d %s", r.status, r.raw)
	}
	if after := normalized(); after != before {
		t.Fatalf("unauthenticated batches were normalised: pulse_ingest_normalize_seconds_count %v -> %v", before, after)
	}
	// With a key the same broken bodies are explained.
	if r := h.post("/v1/batch", `{"batch":[`, basic("wk")); r.status != 400 || !strings.Contains(r.raw, "invalid JSON") {
		t.Fatalf("a broken batch with a key: %d %s", r.status, r.raw)
	}
}

// TestFailedKeysAreRateLimited: guessing keys from one client soon gets
// 429 with Retry-After, even for the right key.
func TestFailedKeysAreRateLimited(t *testing.T) {
	h := newHarness(t, embedded(t), "")
	var last resp
	for range httpapi.FailureBurst + 1 {
		last = h.post("/v1/track", `{"userId":"1","event":"a"}`, basic("guess"))
	}
	if last.status != 429 || last.headers.Get("Retry-After") == "" || !strings.Contains(last.raw, "too many failed authentications") {
		t.Fatalf("after %d unknown keys: %d %s Retry-After %q", httpapi.FailureBurst+1, last.status, last.raw, last.headers.Get("Retry-After"))
	}
	if r := h.post("/v1/track", `{"userId":"1","event":"a"}`, basic("wk")); r.status != 429 {
		t.Fatalf("the right key from the same client: %d %s", r.status, r.raw)
	}
}

// TestInputHoles: ids keep their digits, invalid text and long ids are
// refused naming the field, a single event that is not JSON is
// dead-lettered as docs/api.md says.
func TestInputHoles(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	// 2^53+1 and 2^53 are two users.
	for _, c := range []struct{ path, body string }{
		{"/v1/batch", `{"batch":[{"type":"identify","messageId":"b1","userId":9007199254740993},{"type":"identify","messageId":"b2","userId":9007199254740992}]}`},
		{"/v1/identify", `{"messageId":"s1","userId":9007199254740995}`},
		{"/v1/stream", `{"api_key":"wk","feature_set":"user/x/1","features":[{"id":9007199254740997,"age":31.5},{"id":"\ud800"},{"id":"` + strings.Repeat("7", 257) + `"}]}`},
	} {
		if r := h.post(c.path, c.body, basic("wk")); r.status != 200 {
			t.Fatalf("%s: %d %s", c.path, r.status, r.raw)
		} else if c.path == "/v1/stream" && (!strings.Contains(r.raw, `{"index":1,"error":"id: is not valid Unicode text`) || !strings.Contains(r.raw, `{"index":2,"error":"userId: is 257 bytes, over the 256 byte limit","field":"userId","reason":"is 257 bytes, over the 256 byte limit"}`)) {
			t.Fatalf("stream rows: %s", r.raw)
		}
	}
	recs := consume(t, brokers, "pulse.events", 4)
	ids := map[string]bool{}
	for _, r := range recs {
		e, err := event.Unmarshal(r.Value)
		if err != nil || string(r.Key) != e.UserID {
			t.Fatalf("record %s key %s: %v", r.Value, r.Key, err)
		}
		ids[e.UserID] = true
		if e.UserID == "9007199254740997" && e.Traits["age"] != 31.5 {
			t.Fatalf("row traits: %v", e.Traits)
		}
	}
	for _, want := range []string{"9007199254740993", "9007199254740992", "9007199254740995", "9007199254740997"} {
		if !ids[want] {
			t.Fatalf("ids %v lack %s", ids, want)
		}
	}

	for _, c := range []struct{ body, err string }{
		{`{"userId":"\ud800","event":"a"}`, "userId: is not valid Unicode text"},
		{"{\"userId\":\"1\",\"event\":\"a\",\"properties\":{\"n\":\"\xff\"}}", "properties.n: is not valid Unicode text"},
		{`{"userId":"` + strings.Repeat("u", 300) + `","event":"a"}`, "userId: is 300 bytes, over the 256 byte limit"},
		{`{"userId":"1","event":`, "invalid JSON"},
	} {
		if r := h.post("/v1/track", c.body, basic("wk")); r.status != 400 || !strings.Contains(r.raw, c.err) {
			t.Fatalf("%.40s: %d %s, want 400 %s", c.body, r.status, r.raw, c.err)
		}
	}
	// Every refusal is in the dead letters, the invalid JSON as sent.
	dls := consume(t, brokers, "pulse.events.invalid", 6)
	d, err := event.DecodeDeadLetter(dls[5].Value)
	if err != nil || !strings.HasPrefix(d.Error, "invalid JSON") || string(d.Event) != `"{\"userId\":\"1\",\"event\":"` || d.KeyName != "app" {
		t.Fatalf("dead letter of invalid JSON: %+v %v", d, err)
	}
}
