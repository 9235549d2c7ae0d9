package ingest_test

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strings"
	"testing"

	"github.com/pulse-rt/pulse/event"
)

func gzipped(s string) string {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.String()
}

func contentType(ct string) func(*http.Request) {
	return func(r *http.Request) {
		if ct == "" {
			r.Header.Del("Content-Type")
		} else {
			r.Header.Set("Content-Type", ct)
		}
	}
}

// TestLenientContentType: JSON, plain or gzipped (said or not), is taken
// whatever its label; a body that is not JSON is a 400 naming the label.
func TestLenientContentType(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	form := contentType("application/x-www-form-urlencoded")
	gz := func(r *http.Request) { r.Header.Set("Content-Encoding", "gzip") }
	batch := `{"writeKey":"wk","batch":[{"type":"track","messageId":"lenient-1","userId":"u","event":"a"}]}`
	for _, c := range []struct {
		name, path, body string
		opts             []func(*http.Request)
	}{
		{"form label, gzip said", "/v1/batch", gzipped(batch), []func(*http.Request){form, gz}},
		{"form label, gzip unsaid", "/v1/batch", gzipped(strings.Replace(batch, "lenient-1", "lenient-2", 1)), []func(*http.Request){form}},
		{"no label", "/v1/track", `{"messageId":"lenient-3","userId":"u","event":"a"}`, []func(*http.Request){basic("wk"), contentType("")}},
		{"octet-stream", "/2/httpapi", `{"api_key":"wk","events":[{"event_type":"a","user_id":"u","insert_id":"lenient-4"}]}`, []func(*http.Request){contentType("application/octet-stream")}},
	} {
		if r := h.post(c.path, c.body, c.opts...); r.status != 200 {
			t.Fatalf("%s: %d %s", c.name, r.status, r.raw)
		}
	}
	events := decodeEvents(t, consume(t, brokers, "pulse.events", 4))
	for _, id := range []string{"lenient-1", "lenient-2", "lenient-3", "lenient-4"} {
		if events[id] == nil {
			t.Fatalf("%s never arrived", id)
		}
	}
	for _, c := range []struct {
		name, body string
		opts       []func(*http.Request)
		status     int
		err        string
	}{
		{"form", "event=a", []func(*http.Request){basic("wk"), form}, 400, "the body is not JSON (Content-Type application/x-www-form-urlencoded, and it starts with \"event=a\")"},
		{"empty", "", []func(*http.Request){basic("wk"), contentType("")}, 400, "the body is empty (no Content-Type)"},
		{"form, no key", "writeKey=wk", []func(*http.Request){form}, 401, "missing API key"},
	} {
		if r := h.post("/v1/batch", c.body, c.opts...); r.status != c.status || !strings.Contains(r.body["error"].(string), c.err) {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.status, r.raw, c.status, c.err)
		}
	}
}

// TestAmplitudeAPI: Amplitude's answers, all or nothing, and the key
// before the body.
func TestAmplitudeAPI(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	good := `{"api_key":"wk","events":[{"event_type":"Signed Up","user_id":"u1","insert_id":"amp-1","time":1790000000000},
		{"event_type":"$identify","device_id":"d1","insert_id":"amp-2","user_properties":{"$set":{"plan":"pro"}}}]}`
	for _, path := range []string{"/2/httpapi", "/batch"} {
		r := h.post(path, strings.ReplaceAll(good, `"amp-`, `"`+path+`-`))
		if r.status != 200 || r.body["code"] != 200.0 || r.body["events_ingested"] != 2.0 || r.body["payload_size_bytes"] == nil || r.body["server_upload_time"] == nil {
			t.Fatalf("%s: %d %s", path, r.status, r.raw)
		}
	}
	// One bad event: nothing is ingested; the bad ones are listed by field.
	r := h.post("/2/httpapi", `{"api_key":"wk","events":[{"event_type":"ok","user_id":"u1","insert_id":"amp-3"},
		{"user_id":"u1"},{"event_type":"a","user_id":"u","time":"noon"},{"event_type":"b"}]}`)
	if r.status != 400 || r.body["code"] != 400.0 ||
		!strings.Contains(r.raw, `"events_with_invalid_fields":{"time":[2]}`) ||
		!strings.Contains(r.raw, `"events_with_missing_fields":{"event_type":[1],"user_id":[3]}`) ||
		!strings.Contains(r.raw, `{"index":2,"error":"time: must be a number: milliseconds since the epoch","field":"time","reason":"must be a number: milliseconds since the epoch"}`) {
		t.Fatalf("invalid events: %d %s", r.status, r.raw)
	}
	for _, c := range []struct{ body, missing string }{
		{`{"api_key":"wk"}`, "events"},
	} {
		if r := h.post("/2/httpapi", c.body); r.status != 400 || r.body["missing_field"] != c.missing {
			t.Fatalf("%s: %d %s", c.body, r.status, r.raw)
		}
	}
	// The key first: a broken body with a wrong key is a 401.
	for _, body := range []string{`{"api_key":"nope","events":[`, `{"events":[{"event_type":"a","user_id":"u"}]}`} {
		if r := h.post("/2/httpapi", body); r.status != 401 {
			t.Fatalf("%s: %d %s, want 401", body, r.status, r.raw)
		}
	}
	events := decodeEvents(t, consume(t, brokers, "pulse.events", 4))
	if e := events["/2/httpapi-1"]; e == nil || e.Type != event.Track || e.Event != "Signed Up" || e.Timestamp.UnixMilli() != 1790000000000 {
		t.Fatalf("track: %+v", e)
	}
	if e := events["/batch-2"]; e == nil || e.Type != event.Identify || e.AnonymousID != "d1" || e.Traits["plan"] != "pro" {
		t.Fatalf("identify: %+v", e)
	}
	dls := consume(t, brokers, "pulse.events.invalid", 3)
	if d, _ := event.DecodeDeadLetter(dls[1].Value); d.Field != "time" || d.Index != 2 || d.KeyName != "app" {
		t.Fatalf("dead letter: %+v", d)
	}
}

// TestPostHogAPI: PostHog's answers, the shapes of a capture, and the key
// (api_key or token) before the body.
func TestPostHogAPI(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	for _, c := range []struct{ path, body string }{
		{"/batch/", `{"api_key":"wk","batch":[{"event":"a","distinct_id":"u1","uuid":"ph-1"},{"distinct_id":"u1","uuid":"ph-bad"}]}`},
		{"/capture/", `{"token":"wk","event":"$identify","distinct_id":"u2","uuid":"ph-2","properties":{"$anon_distinct_id":"a2","$set":{"plan":"pro"}}}`},
		{"/e/", `{"api_key":"wk","event":"$pageview","distinct_id":"u3","uuid":"ph-3","properties":{"$current_url":"/x"}}`},
		{"/i/v0/e/", `{"api_key":"wk","batch":[{"event":"b","distinct_id":"u4","uuid":"ph-4"}]}`},
	} {
		r := h.post(c.path, c.body)
		if r.status != 200 || r.body["status"] != 1.0 {
			t.Fatalf("%s: %d %s", c.path, r.status, r.raw)
		}
		if c.path == "/batch/" && !strings.Contains(r.raw, `"rejected":[{"index":1,"error":"event: required","field":"event","reason":"required"}]`) {
			t.Fatalf("batch with a bad event: %s", r.raw)
		}
	}
	if r := h.post("/capture", `{"api_key":"wk","event":"a"}`); r.status != 400 || r.body["detail"] != "distinct_id: required" || r.body["attr"] != "distinct_id" {
		t.Fatalf("single bad event: %d %s", r.status, r.raw)
	}
	for _, body := range []string{`{"api_key":"nope","batch":[`, `{"token":"nope","event":`, `[{"event":"a","distinct_id":"u"}]`} {
		if r := h.post("/batch", body); r.status != 401 {
			t.Fatalf("%s: %d %s, want 401", body, r.status, r.raw)
		}
	}
	events := decodeEvents(t, consume(t, brokers, "pulse.events", 4))
	if e := events["ph-2"]; e == nil || e.Type != event.Identify || e.UserID != "u2" || e.AnonymousID != "a2" || e.Traits["plan"] != "pro" {
		t.Fatalf("identify: %+v", e)
	}
	if e := events["ph-3"]; e == nil || e.Type != event.Page {
		t.Fatalf("pageview: %+v", e)
	}
	consume(t, brokers, "pulse.events.invalid", 2)
}
