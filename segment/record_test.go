package segment

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestRecordCodec: what Encode writes, DecodeRecord reads back whole, and
// DecodeRecordRaw reads back with the features as written.
func TestRecordCodec(t *testing.T) {
	at := time.Date(2024, 1, 1, 10, 0, 0, 123e6, time.UTC)
	rec := NewRecord(Change{Segment: "big_spenders", Enter: true}, "user", "u1", at, "pulse.events/0/7",
		map[string]any{"spend_30d": 120.5, "country": "US"})
	b, err := rec.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// The wire form is plain JSON with the documented names.
	var plain map[string]any
	if err := json.Unmarshal(b, &plain); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"change_id", "segment", "entity", "id", "change", "at", "features"} {
		if _, ok := plain[k]; !ok {
			t.Errorf("%s lacks %q", b, k)
		}
	}
	back, err := DecodeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, rec) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", back, rec)
	}
	head, raw, err := DecodeRecordRaw(b)
	if err != nil {
		t.Fatal(err)
	}
	want := rec
	want.Features = nil
	if !reflect.DeepEqual(head, want) || string(raw) != `{"country":"US","spend_30d":120.5}` {
		t.Fatalf("raw: %+v %s", head, raw)
	}

	// Without features: none either way.
	rec.Features = nil
	b, _ = rec.Encode()
	if back, err := DecodeRecord(b); err != nil || back.Features != nil {
		t.Fatalf("no features: %+v %v", back, err)
	}
	if _, raw, err := DecodeRecordRaw(b); err != nil || raw != nil {
		t.Fatalf("no features raw: %s %v", raw, err)
	}

	for _, bad := range []string{`not json`, `{"segment":1}`, `{"segment":"s","at":"yesterday"}`, `{"segment":"s","features":[1]}`} {
		if _, err := DecodeRecord([]byte(bad)); err == nil {
			t.Errorf("DecodeRecord(%s): no error", bad)
		}
	}
	if _, err := (&Record{Features: map[string]any{"x": func() {}}}).Encode(); err == nil {
		t.Error("Encode of a feature with no JSON form: no error")
	}
}
