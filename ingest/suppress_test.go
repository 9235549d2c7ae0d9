package ingest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/ingest"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Ingest drops the events of suppressed entity ids (people deleted with
// suppression) on every path, answered as accepted, and takes them again
// once the suppression is lifted (a tombstone); other ids pass.
func TestSuppressedIDsDropped(t *testing.T) {
	brokers := embedded(t)
	var sup *ingest.Suppressions
	var cfg *config.Config
	h := newHarnessServer(t, brokers, "", func(c *config.Config) { cfg = c }, func(s *ingest.Server) {
		sup = ingest.NewSuppressions(cfg, nil)
		s.Suppress(sup)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx) }()
	defer func() { cancel(); <-done }()

	put := func(id string, lift bool) {
		t.Helper()
		r := &kgo.Record{Topic: cfg.Kafka.Topics.Suppressions, Key: []byte(id), Value: []byte(`{"request_id":"d1"}`)}
		if lift {
			r.Value = nil
		}
		if err := h.client.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	put("gone", false)
	put("gone-device", false)
	testenv.WaitFor(t, 10*time.Second, "the suppressions read", func() bool { return sup.Has([]byte("gone")) && sup.Has([]byte("gone-device")) })

	before := testenv.Gathered(t, "pulse_ingest_suppressed_total", nil)
	for _, c := range []struct{ path, body string }{
		{"/v1/track", `{"userId":"gone","event":"Order Completed","messageId":"s1"}`},
		{"/v1/batch", `{"batch":[{"type":"track","userId":"gone","event":"x","messageId":"s2"},{"type":"page","anonymousId":"gone-device","messageId":"s3"},{"type":"track","userId":"kept","event":"x","messageId":"k1"}]}`},
		{"/v1/batch", `{"batch":[{"type":"track","userId":"gone","event":"x","messageId":"s4"}]}`}, // nothing left to produce
	} {
		if r := h.post(c.path, c.body, basic("wk")); r.status != 200 || r.raw != `{"success":true}` {
			t.Fatalf("%s: %d %s", c.path, r.status, r.raw)
		}
	}
	// The other SDKs' APIs: Amplitude's and PostHog's.
	if r := h.post("/2/httpapi", `{"api_key":"wk","events":[{"event_type":"a","user_id":"gone","insert_id":"amp-s"}]}`); r.status != 200 {
		t.Fatalf("amplitude: %d %s", r.status, r.raw)
	}
	if r := h.post("/capture/", `{"token":"wk","event":"a","distinct_id":"gone","uuid":"ph-s"}`); r.status != 200 {
		t.Fatalf("posthog: %d %s", r.status, r.raw)
	}
	if d := testenv.Gathered(t, "pulse_ingest_suppressed_total", nil) - before; d != 6 {
		t.Errorf("pulse_ingest_suppressed_total grew by %v, want 6", d)
	}
	// Lifted: gone's events pass again.
	put("gone", true)
	testenv.WaitFor(t, 10*time.Second, "the lift read", func() bool { return !sup.Has([]byte("gone")) })
	if r := h.post("/v1/track", `{"userId":"gone","event":"Signed Up","messageId":"b1"}`, basic("wk")); r.status != 200 {
		t.Fatalf("after the lift: %d %s", r.status, r.raw)
	}
	var ids []string
	for _, r := range consume(t, brokers, "pulse.events", 2) {
		ids = append(ids, string(r.Key))
	}
	if strings.Join(ids, " ") != "kept gone" && strings.Join(ids, " ") != "gone kept" {
		t.Fatalf("events on the topic: %v, want kept's and gone's after the lift alone", ids)
	}
}
