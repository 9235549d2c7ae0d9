package stream

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The stream's dead letter is event.DeadLetter with every field the
// stream's own record carried before: why (reason, error, field), who
// (source), when, the messageId, the input position and the input itself.
func TestDeadLetterCarriesReasonAndPosition(t *testing.T) {
	cfg, err := config.Parse([]byte("stream:\n  allowed_lateness: 1d\n"), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tk := p.newTask(3)
	f := func(value, reason, msgID string, cause error, want string) {
		t.Helper()
		in := &kgo.Record{Topic: "pulse.events", Partition: 3, Offset: 7, Key: []byte("a"), Value: []byte(value)}
		r := tk.deadLetter(in, reason, msgID, cause, t0)
		if r.Topic != cfg.Kafka.Topics.Invalid || string(r.Key) != "a" {
			t.Errorf("record %s/%s, want %s/a", r.Topic, r.Key, cfg.Kafka.Topics.Invalid)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(r.Value, &fields); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range []string{"error", "field", "reason", "source", "receivedAt", "messageId", "topic", "partition", "offset", "event"} {
			if v, ok := fields[k]; ok {
				got = append(got, fmt.Sprintf("%s=%s", k, v))
			}
		}
		sort.Strings(got)
		if s := strings.Join(got, " "); s != want {
			t.Errorf("dead letter %s\n got %s\nwant %s", r.Value, s, want)
		}
	}
	f(`{"type":"nope"}`, event.ReasonInvalid, "", &event.FieldError{Field: "type", Reason: "unknown"},
		`error="type: unknown" event={"type":"nope"} field="type" offset=7 partition=3 reason="invalid" receivedAt="2025-06-01T12:00:00Z" source="stream" topic="pulse.events"`)
	f(`not json`, event.ReasonLate, "m1", fmt.Errorf("event too late"),
		`error="event too late" event="not json" messageId="m1" offset=7 partition=3 reason="late" receivedAt="2025-06-01T12:00:00Z" source="stream" topic="pulse.events"`)
}
