package event

import (
	"strings"
	"testing"
	"time"
)

var sdkNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func TestAmplitudeEvent(t *testing.T) {
	e, err := AmplitudeEvent([]byte(`{"event_type":"Order Completed","user_id":"u1","device_id":"d1","time":1795000000123,
		"insert_id":"ins-1","event_properties":{"order_id":"o1"},"revenue":42.5,"user_properties":{"$set":{"plan":"pro"},"$setOnce":{"plan":"free","first":"x"},"$add":{"n":1}},
		"library":"amplitude-node-ts/1.5.73","ip":"1.2.3.4","os_name":"linux","platform":"Node.js","session_id":7}`), sdkNow, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != Track || e.Event != "Order Completed" || e.UserID != "u1" || e.AnonymousID != "d1" || e.MessageID != "ins-1" ||
		e.Timestamp.UnixMilli() != 1795000000123 || e.Properties["revenue"] != 42.5 || e.Properties["order_id"] != "o1" {
		t.Fatalf("track: %+v", e)
	}
	traits := e.Context["traits"].(map[string]any)
	if traits["plan"] != "pro" || traits["first"] != "x" {
		t.Fatalf("traits: $set must win over $setOnce: %v", traits)
	}
	amp := e.Context["amplitude"].(map[string]any)
	if amp["platform"] != "Node.js" || amp["session_id"] != 7.0 || amp["user_properties"].(map[string]any)["$add"] == nil {
		t.Fatalf("context.amplitude: %v", amp)
	}
	if lib := e.Context["library"].(map[string]any); lib["name"] != "amplitude-node-ts" || lib["version"] != "1.5.73" ||
		e.Context["ip"] != "1.2.3.4" || e.Context["os"].(map[string]any)["name"] != "linux" {
		t.Fatalf("context: %v", e.Context)
	}

	e, err = AmplitudeEvent([]byte(`{"event_type":"$identify","device_id":12345,"user_properties":{"$set":{"plan":"pro"}}}`), sdkNow, DefaultLimits)
	if err != nil || e.Type != Identify || e.AnonymousID != "12345" || e.Traits["plan"] != "pro" || !e.Timestamp.Equal(sdkNow) || e.MessageID == "" {
		t.Fatalf("identify: %+v %v", e, err)
	}

	for _, c := range []struct{ body, err string }{
		{`{"user_id":"u"}`, "event_type: required"},
		{`{"event_type":"a"}`, "user_id: required: user_id or device_id"},
		{`{"event_type":"a","user_id":"u","time":"2026-01-01"}`, "time: must be a number"},
		{`{"event_type":"a","user_id":"u","time":1}`, "time: 1970-01-01T00:00:00Z is out of range"},
		{`{"event_type":"a","user_id":"u","event_properties":[1]}`, "event_properties: must be an object"},
		{`{"event_type":"a","user_id":"u","user_properties":{"$set":1}}`, "user_properties.$set: must be an object"},
		{`{"event_type":"a","user_id":"u","insert_id":"` + strings.Repeat("i", 101) + `"}`, "insert_id: is 101 characters"},
		{`{"event_type":"a","user_id":"u","event_properties":{"n":"\ud800"}}`, "event_properties.n: is not valid Unicode"},
		{`{"event_type":5,"user_id":"u"}`, "event_type: must be a string"},
	} {
		if _, err := AmplitudeEvent([]byte(c.body), sdkNow, DefaultLimits); err == nil || !strings.HasPrefix(err.Error(), c.err) {
			t.Errorf("%s: %v, want %s", c.body, err, c.err)
		}
	}
	if _, err := DecodeAmplitude([]byte(`{"api_key":"k"}`), DefaultLimits); err == nil || err.Error() != "events: required: a list of events" {
		t.Fatalf("no events: %v", err)
	}
}

func TestPostHogEvent(t *testing.T) {
	sent := sdkNow.Add(-10 * time.Second) // the client's clock is 10 s slow
	e, err := PostHogEvent([]byte(`{"event":"Order Completed","distinct_id":"u1","uuid":"01890000-0000-7000-8000-000000000001",
		"timestamp":"2026-11-22T11:59:40Z","properties":{"revenue":3,"$lib":"posthog-node","$lib_version":"5.70.0","$set":{"plan":"pro"}}}`), sdkNow, DefaultLimits, sent)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != Track || e.Event != "Order Completed" || e.UserID != "u1" || e.MessageID != "01890000-0000-7000-8000-000000000001" ||
		e.Properties["revenue"] != 3.0 || e.Context["library"].(map[string]any)["version"] != "5.70.0" || e.Context["traits"].(map[string]any)["plan"] != "pro" {
		t.Fatalf("capture: %+v", e)
	}
	// Sent 10 s after the event by a clock 10 s slow: it happened 10 s ago.
	if want := sdkNow.Add(-10 * time.Second); !e.Timestamp.Equal(want) {
		t.Fatalf("timestamp %s, want %s (skew-corrected)", e.Timestamp, want)
	}

	e, err = PostHogEvent([]byte(`{"event":"$identify","distinct_id":"u1","properties":{"$anon_distinct_id":"a1","$set":{"plan":"pro"},"$set_once":{"plan":"x","first":"y"}}}`), sdkNow, DefaultLimits, time.Time{})
	if err != nil || e.Type != Identify || e.UserID != "u1" || e.AnonymousID != "a1" || e.Traits["plan"] != "pro" || e.Traits["first"] != "y" || e.Properties["$set"] != nil {
		t.Fatalf("identify: %+v %v", e, err)
	}
	e, err = PostHogEvent([]byte(`{"event":"$set","distinct_id":7,"$set":{"plan":"pro"}}`), sdkNow, DefaultLimits, time.Time{})
	if err != nil || e.Type != Identify || e.UserID != "7" || e.Traits["plan"] != "pro" {
		t.Fatalf("$set: %+v %v", e, err)
	}
	e, err = PostHogEvent([]byte(`{"event":"$create_alias","distinct_id":"u1","properties":{"alias":"a1"}}`), sdkNow, DefaultLimits, time.Time{})
	if err != nil || e.Type != Alias || e.UserID != "u1" || e.PreviousID != "a1" {
		t.Fatalf("alias: %+v %v", e, err)
	}
	e, err = PostHogEvent([]byte(`{"event":"x","properties":{"distinct_id":"u2","token":"k"},"offset":5000}`), sdkNow, DefaultLimits, time.Time{})
	if err != nil || e.UserID != "u2" || !e.Timestamp.Equal(sdkNow.Add(-5*time.Second)) {
		t.Fatalf("posthog-js shape: %+v %v", e, err)
	}

	for _, c := range []struct{ body, err string }{
		{`{"distinct_id":"u"}`, "event: required"},
		{`{"event":"a"}`, "distinct_id: required"},
		{`{"event":"a","distinct_id":{}}`, "distinct_id: must be a string or a number"},
		{`{"event":"a","distinct_id":"u","timestamp":"yesterday"}`, `timestamp: "yesterday" is not an ISO-8601 date`},
		{`{"event":"a","distinct_id":"u","properties":{"$set":[1]}}`, "properties.$set: must be an object"},
		{`{"event":"$create_alias","distinct_id":"u"}`, "properties.alias: required"},
		{`{"event":"a","distinct_id":"u","uuid":"` + strings.Repeat("i", 101) + `"}`, "uuid: is 101 characters"},
	} {
		if _, err := PostHogEvent([]byte(c.body), sdkNow, DefaultLimits, time.Time{}); err == nil || !strings.HasPrefix(err.Error(), c.err) {
			t.Errorf("%s: %v, want %s", c.body, err, c.err)
		}
	}
	b, err := DecodePostHog([]byte(`{"token":"k","event":"a","distinct_id":"u"}`), DefaultLimits)
	if err != nil || !b.Single || b.APIKey != "k" || len(b.Items) != 1 {
		t.Fatalf("single: %+v %v", b, err)
	}
	b, err = DecodePostHog([]byte(`[{"event":"a"},{"event":"b"}]`), DefaultLimits)
	if err != nil || b.Single || len(b.Items) != 2 {
		t.Fatalf("list: %+v %v", b, err)
	}
}

func TestBodyHas(t *testing.T) {
	for body, want := range map[string]bool{
		`{"api_key":"k","events":[`:              true,
		`{"api_key":"k","batch":[{"events":1}]}`: false,
		`{"api_key":{"events":1},"events":[]}`:   true,
		`[{"events":1}]`:                         false,
	} {
		if got := BodyHas([]byte(body), "events"); got != want {
			t.Errorf("BodyHas(%s) = %v, want %v", body, got, want)
		}
	}
}

// sdkBatch is a body of 100 copies of one event under key.
func sdkBatch(key, item string) []byte {
	items := make([]string, 100)
	for i := range items {
		items[i] = item
	}
	return []byte(`{"api_key":"wk","` + key + `":[` + strings.Join(items, ",") + `]}`)
}

// BenchmarkAmplitudeBatch is ingest's work on an Amplitude upload of 100
// events of BenchmarkNormalizeBatch's content: split, map, encode.
func BenchmarkAmplitudeBatch(b *testing.B) {
	body := sdkBatch("events", `{"event_type":"Product Viewed","user_id":"48213","device_id":"8c5e2f4e-5d1c-4b7e","insert_id":"8c5e2f4e-5d1c-4b7e-9a51-3f0d6f2b9c11","time":1795000000000,"event_properties":{"product_id":"p-1234","category":"c-17","price":42.10,"revenue":84.20,"currency":"USD"},"library":"amplitude-node-ts/1.5.73","ip":"10.0.0.12","user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36","platform":"Node.js"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		ab, err := DecodeAmplitude(body, DefaultLimits)
		if err != nil {
			b.Fatal(err)
		}
		for _, raw := range ab.Events {
			e, err := AmplitudeEvent(raw, sdkNow, DefaultLimits)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := e.Marshal(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkPostHogBatch: the same for a PostHog batch.
func BenchmarkPostHogBatch(b *testing.B) {
	body := sdkBatch("batch", `{"event":"Product Viewed","distinct_id":"48213","uuid":"8c5e2f4e-5d1c-4b7e-9a51-3f0d6f2b9c11","timestamp":"2026-11-22T11:59:00.000Z","properties":{"product_id":"p-1234","category":"c-17","price":42.10,"revenue":84.20,"currency":"USD","$lib":"posthog-node","$lib_version":"5.70.0","$ip":"10.0.0.12","$current_url":"https://shop.example.com/products/1234"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		pb, err := DecodePostHog(body, DefaultLimits)
		if err != nil {
			b.Fatal(err)
		}
		for _, raw := range pb.Items {
			e, err := PostHogEvent(raw, sdkNow, DefaultLimits, pb.SentAt)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := e.Marshal(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}
