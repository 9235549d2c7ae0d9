package event

import (
	"errors"
	"testing"
	"time"
)

func TestDeadLetterRoundTrip(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.FixedZone("x", 3600))
	f := func(raw string, err error, wantField, wantEvent string) {
		t.Helper()
		d := NewDeadLetter("stream", ReasonLate, []byte(raw), err, now)
		d.Topic, d.Partition, d.Offset = "pulse.events", 3, 1234
		got, derr := DecodeDeadLetter(d.Encode())
		if derr != nil {
			t.Fatal(derr)
		}
		if got.Field != wantField || string(got.Event) != wantEvent || got.Reason != ReasonLate ||
			got.Source != "stream" || got.Topic != "pulse.events" || got.Partition != 3 || got.Offset != 1234 ||
			!got.ReceivedAt.Equal(now) || got.ReceivedAt.Location() != time.UTC || got.Error != err.Error() {
			t.Fatalf("round trip of %q: %+v", raw, got)
		}
	}
	f(`{"type":"track"}`, &FieldError{Field: "event", Reason: "required"}, "event", `{"type":"track"}`)
	f(`not json`, errors.New("bad"), "", `"not json"`)
	if _, err := DecodeDeadLetter([]byte("{")); err == nil {
		t.Fatal("a broken value decoded")
	}
}
