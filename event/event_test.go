package event

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func TestDecodeErrors(t *testing.T) {
	f := func(raw string, d Defaults, want string) {
		t.Helper()
		_, err := Decode([]byte(raw), now, DefaultLimits, d)
		if err == nil {
			t.Fatalf("Decode(%s): no error, want %q", raw, want)
		}
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("Decode(%s): error %T is not a *FieldError", raw, err)
		}
		if err.Error() != want {
			t.Fatalf("Decode(%s):\n got %q\nwant %q", raw, err.Error(), want)
		}
	}
	none := Defaults{}
	f(`{"type":"track","userId":"1"}`, none, "event: required for track")
	f(`{"userId":"1","event":"x"}`, none, "type: required (track, identify, page, screen, group or alias)")
	f(`{"type":"bogus","userId":"1"}`, none, `type: unknown type "bogus" (want track, identify, page, screen, group or alias)`)
	f(`{"type":3,"userId":"1"}`, none, "type: must be a string")
	f(`{"type":"track","event":"x"}`, none, "userId: userId or anonymousId is required")
	f(`{"type":"track","event":"x","userId":""}`, none, "userId: userId or anonymousId is required")
	f(`{"type":"alias","userId":"1"}`, none, "previousId: required for alias")
	f(`{"type":"alias","anonymousId":"a","previousId":"p"}`, none, "userId: required for alias")
	f(`{"type":"group","userId":"1"}`, none, "groupId: required for group")
	f(`{"type":"track","event":7,"userId":"1"}`, none, "event: must be a string")
	f(`{"type":"track","event":"x","userId":{"a":1}}`, none, "userId: must be a string or a number")
	f(`{"type":"track","event":"x","userId":"1","properties":[1]}`, none, "properties: must be an object")
	f(`{"type":"track","event":"x","userId":"1","context":"c"}`, none, "context: must be an object")
	f(`{"type":"track","event":"x","userId":"1","timestamp":"yesterday"}`, none, `timestamp: "yesterday" is not an ISO-8601 date`)
	f(`{"type":"track","event":"x","userId":"1","timestamp":"1999-12-31T00:00:00Z"}`, none, "timestamp: 1999-12-31T00:00:00Z is out of range (after 2000 and at most 24h0m0s ahead of the server)")
	f(`{"type":"track","event":"x","userId":"1","messageId":"`+strings.Repeat("m", 101)+`"}`, none, "messageId: is 101 characters, over the 100 limit")
	f(`{"type":"track",`, none, "invalid JSON: unexpected end of JSON input at byte 16")
	f(`[1,2]`, none, "invalid JSON: expected an object, got a array")
	// The endpoint's type wins: /v1/track with no type field.
	f(`{"userId":"1"}`, Defaults{Type: Track}, "event: required for track")
}

func TestDecodeSizeLimit(t *testing.T) {
	big := `{"type":"track","event":"x","userId":"1","properties":{"p":"` + strings.Repeat("x", 33<<10) + `"}}`
	_, err := Decode([]byte(big), now, DefaultLimits, Defaults{})
	if err == nil || !strings.Contains(err.Error(), "over the 32768 byte limit") {
		t.Fatalf("got %v, want the 32 KB limit named", err)
	}
}

func TestDecodeNormalises(t *testing.T) {
	raw, err := os.ReadFile("testdata/track.json")
	if err != nil {
		t.Fatal(err)
	}
	e, err := Decode(raw, now, DefaultLimits, Defaults{Context: map[string]any{"ip": "1.1.1.1", "app": "shop"}})
	if err != nil {
		t.Fatal(err)
	}
	if e.MessageID != "m-1" || e.UserID != "612" || e.EntityID() != "612" {
		t.Fatalf("ids: %+v", e)
	}
	// sentAt - originalTimestamp = 1s, so timestamp = receivedAt - 1s.
	if want := now.Add(-time.Second); !e.Timestamp.Equal(want) {
		t.Fatalf("timestamp %v, want skew-corrected %v", e.Timestamp, want)
	}
	if !e.ReceivedAt.Equal(now) {
		t.Fatalf("receivedAt %v, want %v", e.ReceivedAt, now)
	}
	// Batch context merges under the item's own.
	if e.Context["ip"] != "8.8.8.8" || e.Context["app"] != "shop" {
		t.Fatalf("context merge: %v", e.Context)
	}
	if v, ok := e.Lookup("properties.revenue"); !ok || v != 25.0 {
		t.Fatalf("properties.revenue = %v %v", v, ok)
	}
	if v, ok := e.Lookup("context.library.name"); !ok || v != "analytics-node" {
		t.Fatalf("context.library.name = %v %v", v, ok)
	}
	if v, ok := e.Lookup("timestamp"); !ok || v != float64(now.Add(-time.Second).UnixMilli()) {
		t.Fatalf("timestamp lookup = %v", v)
	}

	// Round trip through the Kafka schema.
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.MessageID != e.MessageID || !back.Timestamp.Equal(e.Timestamp) || back.Event != e.Event {
		t.Fatalf("round trip: %+v", back)
	}
}

func TestDecodeTimestamps(t *testing.T) {
	f := func(raw string, d Defaults, want time.Time) {
		t.Helper()
		e, err := Decode([]byte(raw), now, DefaultLimits, d)
		if err != nil {
			t.Fatal(err)
		}
		if !e.Timestamp.Equal(want) {
			t.Fatalf("Decode(%s).Timestamp = %v, want %v", raw, e.Timestamp, want)
		}
	}
	base := `{"type":"track","event":"x","userId":"1"`
	// Nothing given: receivedAt.
	f(base+`}`, Defaults{}, now)
	// Explicit timestamp kept as is (historical import), even with sentAt.
	f(base+`,"timestamp":"2025-03-01T00:00:00Z","sentAt":"2026-11-22T12:00:05Z"}`, Defaults{}, time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC))
	// Skew correction: the client clock is 10 minutes fast.
	f(base+`,"originalTimestamp":"2026-11-22T12:09:58Z","sentAt":"2026-11-22T12:10:00Z"}`, Defaults{}, now.Add(-2*time.Second))
	// Batch-level sentAt applies to items.
	f(base+`,"originalTimestamp":"2026-11-22T12:09:58Z"}`, Defaults{SentAt: time.Date(2026, 11, 22, 12, 10, 0, 0, time.UTC)}, now.Add(-2*time.Second))
	// originalTimestamp alone is taken as is.
	f(base+`,"originalTimestamp":"2026-11-22T11:00:00+01:00"}`, Defaults{}, time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
	// Epoch milliseconds.
	f(base+`,"timestamp":1763805600000}`, Defaults{}, time.UnixMilli(1763805600000).UTC())
}

func TestDecodeGeneratesMessageID(t *testing.T) {
	a, err := Decode([]byte(`{"type":"identify","userId":42}`), now, DefaultLimits, Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Decode([]byte(`{"type":"identify","userId":42}`), now, DefaultLimits, Defaults{})
	if len(a.MessageID) != 36 || a.MessageID == b.MessageID {
		t.Fatalf("messageIds %q %q: want distinct UUIDs", a.MessageID, b.MessageID)
	}
	if a.UserID != "42" {
		t.Fatalf("numeric userId = %q", a.UserID)
	}
}

func TestDecodeBatch(t *testing.T) {
	body := `{"batch":[{"type":"track","event":"a","userId":"1"},{"type":"track","userId":"2"}],"context":{"app":"x"},"writeKey":"k","sentAt":"2026-11-22T12:00:00Z"}`
	b, err := DecodeBatch([]byte(body), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Items) != 2 || b.WriteKey != "k" || b.Defaults.Context["app"] != "x" || b.Defaults.SentAt.IsZero() {
		t.Fatalf("batch: %+v", b)
	}
	if _, err := DecodeBatch([]byte(`{"events":[]}`), DefaultLimits); err == nil || err.Error() != "batch: required: a list of events" {
		t.Fatalf("missing batch: %v", err)
	}
	items := make([]string, 2501)
	for i := range items {
		items[i] = `{}`
	}
	_, err = DecodeBatch([]byte(`{"batch":[`+strings.Join(items, ",")+`]}`), DefaultLimits)
	var le *LimitError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "2501 events, over the 2500 event limit") {
		t.Fatalf("over limit: %v", err)
	}
}

// testdataEvents reads the example events under testdata/, the seeds of
// the decoders' tests and fuzz targets.
func testdataEvents(t testing.TB) [][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no events under testdata/: %v", err)
	}
	out := make([][]byte, 0, len(files))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func FuzzDecode(f *testing.F) {
	for _, b := range testdataEvents(f) {
		f.Add(b)
	}
	f.Add([]byte(`{"batch":[{"type":"track"}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := Decode(raw, now, DefaultLimits, Defaults{})
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T %v is not a FieldError", err, err)
			}
			return
		}
		// Whatever is accepted must survive the Kafka round trip.
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("accepted event does not round trip: %v\n%s", err, b)
		}
		if back.EntityID() != e.EntityID() || back.MessageID != e.MessageID {
			t.Fatalf("round trip changed ids")
		}
		_, _ = DecodeBatch(raw, DefaultLimits)
		var v any
		if json.Unmarshal(b, &v) != nil {
			t.Fatal("marshalled event is not JSON")
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	raw, err := os.ReadFile("testdata/track.json")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := Decode(raw, now, DefaultLimits, Defaults{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkDecodeMarshal(b *testing.B) {
	raw, err := os.ReadFile("testdata/track.json")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		e, err := Decode(raw, now, DefaultLimits, Defaults{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
