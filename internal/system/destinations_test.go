package system

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/model"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// topicsConfig is a kafka: section on brokers with every topic under prefix.
func topicsConfig(brokers []string, prefix string) string {
	return fmt.Sprintf(`kafka:
  brokers: [%q]
  topics: {events: %[2]s.events, invalid: %[2]s.invalid, segments: %[2]s.segments, predictions: %[2]s.predictions,
           state: %[2]s.state, seeds: %[2]s.seeds, activations: %[2]s.activations, traits: %[2]s.traits}
`, brokers[0], prefix)
}

// TestSegmentDestinationIntoPulse: a segment destination whose endpoint
// is a second Pulse's ingest, on a real broker: every change lands there
// once as an Audience Entered or Exited track (messageId = change_id) and
// an identify with the trait.
func TestSegmentDestinationIntoPulse(t *testing.T) {
	brokers := testenv.Kafka(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The receiving Pulse: its ingest on a real listener.
	cfgB, err := config.Parse([]byte(topicsConfig(brokers, testenv.Topic(t, "recv"))+fmt.Sprintf(`
ingest: {listen: %q}
keys: [{name: app, key: wk, scopes: [write]}]
`, testenv.FreeAddr(t))), "b.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b := New(ctx, cfgB, nil)
	defer b.Close()
	if err := b.StartIngest(); err != nil {
		t.Fatal(err)
	}

	// The sending Pulse: its destinations.
	cfgA, err := config.Parse([]byte(topicsConfig(brokers, testenv.Topic(t, "send"))+fmt.Sprintf(`
segments:
  - {name: big_spenders, rule: 'revenue_30d > 500'}
destinations:
  - {name: crm, type: segment, url: %q, write_key: wk, identify: true, segments: [big_spenders], start_from: beginning, batch_size: 10}
`, b.IngestURL())), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kafka.NewClient(cfgA.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafka.EnsureTopics(ctx, cl, cfgA.Kafka); err != nil {
		t.Fatal(err)
	}
	const n = 40
	changes := map[string]segment.Record{}
	for i := range n {
		r := segment.NewRecord(segment.Change{Segment: "big_spenders", Enter: i%3 != 2}, "user", fmt.Sprint("u", i%7),
			time.Date(2025, 3, 1, 12, 0, i, 0, time.UTC), fmt.Sprint("test/", i), map[string]any{"revenue_30d": 600.0})
		v, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: cfgA.Kafka.Topics.Segments, Key: []byte(r.EntityID), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		changes[r.ID] = r
	}
	a := New(ctx, cfgA, nil)
	defer a.Close()
	if err := a.StartDestinations(""); err != nil {
		t.Fatal(err)
	}

	// Read the receiver's events until every call arrived, then check no
	// more than that is there.
	cons, err := kafka.NewClient(cfgB.Kafka, kgo.ConsumeTopics(cfgB.Kafka.Topics.Events), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	seen := map[string]int{}
	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	defer rcancel()
	for len(seen) < 2*n {
		fs := cons.PollFetches(rctx)
		if rctx.Err() != nil {
			t.Fatalf("%d of %d calls arrived", len(seen), 2*n)
		}
		fs.EachRecord(func(rec *kgo.Record) {
			e, err := event.Unmarshal(rec.Value)
			if err != nil {
				t.Fatalf("event %s: %v", rec.Value, err)
			}
			seen[e.MessageID]++
			id := e.MessageID
			if e.Type == "identify" {
				id = id[:len(id)-len("-identify")]
			}
			c, ok := changes[id]
			if !ok || e.UserID != c.EntityID {
				t.Fatalf("event %s matches no change", rec.Value)
			}
			entered := c.Change == segment.ChangeEnter
			got, _ := json.Marshal(map[string]any{"event": e.Event, "properties": e.Properties, "traits": e.Traits})
			var want []byte
			if e.Type == "track" {
				want, _ = json.Marshal(map[string]any{"event": map[bool]string{true: "Audience Entered", false: "Audience Exited"}[entered],
					"properties": map[string]any{"audience_key": "big_spenders", "big_spenders": entered}, "traits": nil})
			} else {
				want, _ = json.Marshal(map[string]any{"event": "", "properties": nil, "traits": map[string]any{"big_spenders": entered}})
			}
			if string(got) != string(want) {
				t.Errorf("%s event for change %s: %s, want %s", e.Type, id, got, want)
			}
		})
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("messageId %s arrived %d times", id, k)
		}
	}
	ends, err := kadm.NewClient(cons).ListEndOffsets(ctx, cfgB.Kafka.Topics.Events)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != 2*n {
		t.Errorf("%d events in the receiver, want %d (a track and an identify per change)", total, 2*n)
	}
}

// TestTraitDestinationIntoPulse: a segment destination of trait changes
// whose endpoint is a second Pulse's ingest, on a real broker: each change
// that moves the rounded score lands there once as an identify with the
// rounded trait (messageId = change_id) and a track "Trait Changed"; the
// jitter does not.
func TestTraitDestinationIntoPulse(t *testing.T) {
	brokers := testenv.Kafka(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	cfgB, err := config.Parse([]byte(topicsConfig(brokers, testenv.Topic(t, "recv"))+fmt.Sprintf(`
ingest: {listen: %q}
keys: [{name: app, key: wk, scopes: [write]}]
`, testenv.FreeAddr(t))), "b.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b := New(ctx, cfgB, nil)
	defer b.Close()
	if err := b.StartIngest(); err != nil {
		t.Fatal(err)
	}

	cfgA, err := config.Parse([]byte(topicsConfig(brokers, testenv.Topic(t, "send"))+fmt.Sprintf(`
features:
  - {name: orders, agg: count, event: order}
models:
  - {name: churn, path: churn.json, features: [orders]}
traits:
  - {name: churn_risk, model: churn}
destinations:
  - {name: crm, type: segment, url: %q, write_key: wk, traits: [churn_risk], trait_track: true, start_from: beginning, batch_size: 10}
`, b.IngestURL())), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kafka.NewClient(cfgA.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafka.EnsureTopics(ctx, cl, cfgA.Kafka); err != nil {
		t.Fatal(err)
	}
	const n = 30
	changes := map[string]model.TraitScore{}
	prev := map[string]*float64{}
	jitter := 0
	for i := range n {
		u := fmt.Sprint("u", i%5)
		s := float64(i) / n
		if i%6 == 5 {
			s = *prev[u] + 0.0001 // below the 2 decimals: not delivered
			jitter++
		}
		at := time.Date(2025, 3, 1, 12, 0, i, 0, time.UTC)
		r := model.TraitScore{ChangeID: model.TraitChangeID("churn_risk", "user", u, at, s), Trait: "churn_risk", Model: "churn",
			Version: "abc123", Entity: "user", ID: u, Score: &s, Previous: prev[u], At: at}
		prev[u] = &s
		v, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: cfgA.Kafka.Topics.Traits, Key: []byte(u), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if i%6 != 5 {
			changes[r.ChangeID] = r
		}
	}
	a := New(ctx, cfgA, nil)
	defer a.Close()
	if err := a.StartDestinations(""); err != nil {
		t.Fatal(err)
	}

	round := func(v *float64) any {
		if v == nil {
			return nil
		}
		return math.Round(*v*100) / 100
	}
	cons, err := kafka.NewClient(cfgB.Kafka, kgo.ConsumeTopics(cfgB.Kafka.Topics.Events), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	want := 2 * len(changes)
	seen := map[string]int{}
	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	defer rcancel()
	for len(seen) < want {
		fs := cons.PollFetches(rctx)
		if rctx.Err() != nil {
			t.Fatalf("%d of %d calls arrived", len(seen), want)
		}
		fs.EachRecord(func(rec *kgo.Record) {
			e, err := event.Unmarshal(rec.Value)
			if err != nil {
				t.Fatalf("event %s: %v", rec.Value, err)
			}
			seen[e.MessageID]++
			id := strings.TrimSuffix(e.MessageID, "-track")
			c, ok := changes[id]
			if !ok || e.UserID != c.ID {
				t.Fatalf("event %s matches no delivered change", rec.Value)
			}
			got, _ := json.Marshal(map[string]any{"event": e.Event, "properties": e.Properties, "traits": e.Traits})
			var w []byte
			if e.Type == "track" {
				w, _ = json.Marshal(map[string]any{"event": "Trait Changed",
					"properties": map[string]any{"trait": "churn_risk", "score": round(c.Score), "previous": round(c.Previous), "model_version": "abc123"}, "traits": nil})
			} else {
				w, _ = json.Marshal(map[string]any{"event": "", "properties": nil, "traits": map[string]any{"churn_risk": round(c.Score)}})
			}
			if string(got) != string(w) {
				t.Errorf("%s event for change %s: %s, want %s", e.Type, id, got, w)
			}
		})
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("messageId %s arrived %d times", id, k)
		}
	}
	time.Sleep(time.Second) // the jitter, were it sent, would be there by now
	ends, err := kadm.NewClient(cons).ListEndOffsets(ctx, cfgB.Kafka.Topics.Events)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != int64(want) {
		t.Errorf("%d events in the receiver, want %d (an identify and a track per change; %d jitter changes not sent)", total, want, jitter)
	}
}
