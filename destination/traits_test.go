package destination

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/model"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTraitFilter: decimals deliver a change only when the rounded score
// moves; thresholds only when it crosses one; no score is below every
// threshold.
func TestTraitFilter(t *testing.T) {
	two := TraitFilter{Decimals: 2}
	th := TraitFilter{Decimals: 2, Thresholds: []float64{0.5, 0.8}}
	for _, c := range []struct {
		f          TraitFilter
		prev, next *float64
		want       bool
	}{
		{two, sp(0.12341), sp(0.12349), false}, // jitter in the 5th decimal
		{two, sp(0.1249), sp(0.1251), true},    // 0.12 -> 0.13
		{two, sp(0.5), sp(0.5), false},
		{two, sp(0.5), sp(0.6), true},
		{two, nil, sp(0.3), true}, // a first score
		{two, sp(0.3), nil, true}, // the score is gone
		{two, nil, nil, false},
		{two, sp(-0.001), sp(0.001), false}, // both 0 (not -0 and 0)
		{TraitFilter{Decimals: 0}, sp(0.4), sp(0.6), true},
		{TraitFilter{Decimals: 0}, sp(0.6), sp(1.4), false},
		{th, sp(0.2), sp(0.4), false},
		{th, sp(0.4), sp(0.6), true},
		{th, sp(0.6), sp(0.7), false},
		{th, sp(0.7), sp(0.85), true},
		{th, sp(0.85), sp(0.3), true},      // down across both
		{th, sp(0.49), sp(0.5), true},      // 0.5 is above 0.5
		{th, sp(0.499), sp(0.5), false},    // both round to 0.50
		{th, sp(0.4949), sp(0.4951), true}, // rounded: 0.49 -> 0.50
		{th, sp(0.4951), sp(0.4999), false},
		{th, nil, sp(0.9), true},
		{th, nil, sp(0.1), false},
		{th, sp(0.9), nil, true},
		{th, sp(0.1), nil, false},
	} {
		if got := c.f.Passes(c.prev, c.next); got != c.want {
			t.Errorf("%+v: %s -> %s passes %v, want %v", c.f, fmtScore(c.prev), fmtScore(c.next), got, c.want)
		}
	}
	if r := two.Round(sp(0.12345)); *r != 0.12 {
		t.Errorf("Round = %v", *r)
	}
}

func fmtScore(v *float64) string {
	if v == nil {
		return "none"
	}
	return fmt.Sprint(*v)
}

// TestTraitHTTPDestination: a destination with segments and traits gets
// both, in one consumer group: each trait change whose rounded score
// moves, with the template's trait fields, keyed by its change id, in
// each entity's order; retried, dead-lettered (kind trait, its trait
// named) and paused like segment changes; jitter below the decimals and
// traits it does not name are not delivered.
func TestTraitHTTPDestination(t *testing.T) {
	retries0 := testutil.ToFloat64(retriesTotal.WithLabelValues("crm", KindTrait))
	delivered0 := testutil.ToFloat64(deliveredTotal.WithLabelValues("crm", KindTrait))
	rejected0 := testutil.ToFloat64(deadLettersTotal.WithLabelValues("crm", KindTrait, ReasonRejected))
	// u1's scores, each record naming the one before it.
	u1 := []*float64{nil, sp(0.3), sp(0.30004), sp(0.45), sp(0.451), sp(0.46), nil, sp(0.9)}
	var recs []model.TraitScore
	want := map[string]bool{}
	var wantOrder []string
	for i := 1; i < len(u1); i++ {
		r := traitScore("churn_risk", "u1", u1[i-1], u1[i], i)
		recs = append(recs, r)
		if (TraitFilter{Decimals: 2}).Passes(u1[i-1], u1[i]) {
			want[r.ChangeID] = true
			wantOrder = append(wantOrder, r.ChangeID)
		}
	}
	if len(wantOrder) != 5 { // 0.30004 and 0.451 are jitter
		t.Fatalf("%d of u1's changes pass, want 5", len(wantOrder))
	}
	ltv := traitScore("ltv", "u1", nil, sp(10), 50)                 // not named
	retried := traitScore("churn_risk", "u2", sp(0.1), sp(0.2), 51) // 500 first
	refused := traitScore("churn_risk", "u3", sp(0.1), sp(0.7), 52) // 400: dead-lettered
	after := traitScore("churn_risk", "u3", sp(0.7), sp(0.75), 53)  // still delivered
	recs = append(recs, ltv, retried, refused, after)
	want[retried.ChangeID], want[after.ChangeID] = true, true
	seg := change("vip", "u1", true, 60, nil)
	want[seg.ID] = true

	var bad []string
	rc := newReceiver(t, func(r *http.Request, body []byte) string {
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", body, err))
		}
		return r.Header.Get("Idempotency-Key")
	}, func(w http.ResponseWriter, key string, attempt int) int {
		switch {
		case key == retried.ChangeID && attempt == 1:
			return 500
		case key == refused.ChangeID:
			return 400
		}
		return 200
	})
	e := newEnv(t, nil, traitsConfig+fmt.Sprintf(`
segments:
  - {name: vip, rule: 'orders > 1'}
destinations:
  - name: crm
    type: http
    url: %s
    template: '{"kind": {{json .Kind}}, "id": {{json .ID}}, "segment": {{json .Segment}}, "trait": {{json .Trait}}, "score": {{json .Score}}, "previous": {{json .Previous}}, "model": {{json .Model}}, "version": {{json .ModelVersion}}, "at": {{json .At.String}}}'
    segments: [vip]
    traits: [churn_risk]
    decimals: 2
`, rc.srv.URL))
	svc, _ := e.run()
	admin := e.serveAdmin(svc)
	if code, b := call(t, "GET", admin+"/v1/destinations", "admin-key"); code != 200 || !strings.Contains(b, `"segments":["vip"],"traits":["churn_risk"],"group":"pulse-destination-crm"`) {
		t.Fatalf("admin list: %d %s", code, b)
	}
	if code, b := call(t, "POST", admin+"/v1/destinations/crm/pause", "admin-key"); code != 200 {
		t.Fatalf("pause: %d %s", code, b)
	}

	e.produceTraits(recs...)
	e.produce(seg)
	time.Sleep(500 * time.Millisecond) // time enough to deliver, were it not paused
	if n := len(rc.snapshot()); n != 0 {
		t.Fatalf("%d requests while paused", n)
	}
	if code, b := call(t, "POST", admin+"/v1/destinations/crm/resume", "admin-key"); code != 200 {
		t.Fatalf("resume: %d %s", code, b)
	}
	testenv.WaitFor(t, 30*time.Second, "every change delivered", func() bool { return len(distinctOK(rc)) == len(want) })
	dls := e.deadLetters(kafka.DestinationsDeadTopic(e.cfg.Kafka), 1)
	if d := dls[0]; d.Reason != ReasonRejected || d.Kind != KindTrait || d.Trait != "churn_risk" || d.Segment != "" || d.ChangeID != refused.ChangeID || d.Status != 400 || d.Topic != e.cfg.Kafka.Topics.Traits {
		t.Errorf("dead letter %+v", d)
	}
	time.Sleep(200 * time.Millisecond) // nothing more comes
	byID := map[string]model.TraitScore{}
	for _, r := range recs {
		byID[r.ChangeID] = r
	}
	var order []string
	for _, h := range rc.ok() {
		if !want[h.key] {
			t.Errorf("delivered %s: %s", h.key, h.body)
			continue
		}
		var m map[string]any
		json.Unmarshal(h.body, &m)
		if h.key == seg.ID {
			if m["kind"] != "segment" || m["segment"] != "vip" || m["trait"] != "" || m["score"] != nil {
				t.Errorf("segment change as %s", h.body)
			}
			continue
		}
		r := byID[h.key]
		round := func(v *float64) any {
			if v := (TraitFilter{Decimals: 2}).Round(v); v != nil {
				return *v
			}
			return nil
		}
		if m["kind"] != "trait" || m["id"] != r.ID || m["segment"] != "" || m["trait"] != "churn_risk" || m["score"] != round(r.Score) ||
			m["previous"] != round(r.Previous) || m["model"] != "churn" || m["version"] != "abc123" || m["at"] != r.At.Format(time.RFC3339) {
			t.Errorf("trait change %+v as %s", r, h.body)
		}
		if r.ID == "u1" {
			order = append(order, h.key)
		}
	}
	if !slices.Equal(order, wantOrder) {
		t.Errorf("u1 delivered in the order %v, want %v", order, wantOrder)
	}
	if len(bad) > 0 {
		t.Errorf("bad bodies: %v", bad)
	}
	if got := testutil.ToFloat64(retriesTotal.WithLabelValues("crm", KindTrait)) - retries0; got != 1 {
		t.Errorf("trait retries = %v, want 1", got)
	}
	if got := testutil.ToFloat64(deliveredTotal.WithLabelValues("crm", KindTrait)) - delivered0; got != float64(len(want)-1) {
		t.Errorf("traits delivered = %v, want %d", got, len(want)-1)
	}
	if got := testutil.ToFloat64(deadLettersTotal.WithLabelValues("crm", KindTrait, ReasonRejected)) - rejected0; got != 1 {
		t.Errorf("trait dead letters = %v, want 1", got)
	}
	testenv.WaitFor(t, 30*time.Second, "lag 0", func() bool { return testutil.ToFloat64(lagRecords.WithLabelValues("crm")) == 0 })
}

// TestTraitWebhookThresholds: a webhook destination of traits only, with
// thresholds: the changes that cross one, signed, the body the trait
// record as on the topic, the kind and trait in headers.
func TestTraitWebhookThresholds(t *testing.T) {
	rc := newReceiver(t, func(r *http.Request, _ []byte) string { return r.Header.Get(DeliveryHeader) }, nil)
	e := newEnv(t, nil, traitsConfig+fmt.Sprintf(`
segments:
  - {name: vip, rule: 'orders > 1'}
destinations:
  - {name: hook, type: webhook, url: %q, secret: s3cret, traits: ["*"], thresholds: [0.5, 0.8]}
`, rc.srv.URL))
	steps := []*float64{sp(0.2), sp(0.4), sp(0.6), sp(0.7), sp(0.85), sp(0.3), nil, sp(0.9), sp(0.1)}
	var recs []model.TraitScore
	want := map[string]bool{}
	prev := (*float64)(nil)
	for i, s := range steps {
		trait := []string{"churn_risk", "ltv"}[i%2]
		r := traitScore(trait, "u1", prev, s, i)
		prev = s
		recs = append(recs, r)
		if (TraitFilter{Decimals: 2, Thresholds: []float64{0.5, 0.8}}).Passes(r.Previous, r.Score) {
			want[r.ChangeID] = true
		}
	}
	if len(want) != 5 { // 0.4->0.6, 0.7->0.85, 0.85->0.3, none->0.9, 0.9->0.1
		t.Fatalf("%d changes cross, want 5", len(want))
	}
	e.produceTraits(recs...)
	e.produce(change("vip", "u1", true, 99, nil)) // not carried
	e.run()
	testenv.WaitFor(t, 30*time.Second, "5 deliveries", func() bool { return len(distinctOK(rc)) == 5 })
	time.Sleep(200 * time.Millisecond)
	for _, h := range rc.ok() {
		if err := Verify("s3cret", h.header, h.body, time.Now(), time.Minute); err != nil {
			t.Errorf("signature: %v", err)
		}
		r, err := model.DecodeTraitScore(h.body)
		if err != nil || !want[h.key] || r.ChangeID != h.key || h.header.Get(KindHeader) != "trait" || h.header.Get(TraitHeader) != r.Trait ||
			h.header.Get(SegmentHeader) != "" || h.header.Get(AttemptHeader) != "1" {
			t.Errorf("delivery %s %v: %v", h.body, h.header, err)
		}
	}
	if n := len(rc.ok()); n != 5 {
		t.Errorf("%d deliveries, want 5", n)
	}
}

// TestTraitSegmentAPI: the segment sink sends a trait change as an
// identify with the rounded score (messageId the change id) and, with
// trait_track, a track "Trait Changed".
func TestTraitSegmentAPI(t *testing.T) {
	type call struct {
		Type       string         `json:"type"`
		Event      string         `json:"event"`
		UserID     string         `json:"userId"`
		MessageID  string         `json:"messageId"`
		Timestamp  time.Time      `json:"timestamp"`
		Properties map[string]any `json:"properties"`
		Traits     map[string]any `json:"traits"`
	}
	rc := newReceiver(t, func(r *http.Request, body []byte) string { return string(body) }, nil)
	e := newEnv(t, nil, traitsConfig+fmt.Sprintf(`
destinations:
  - {name: crm, type: segment, url: %s, write_key: wk, traits: [churn_risk, ltv], decimals: 3, trait_track: true}
`, rc.srv.URL))
	recs := []model.TraitScore{
		traitScore("churn_risk", "u1", nil, sp(0.123456), 0),
		traitScore("ltv", "u2", sp(10.5), sp(12.25), 1),
		traitScore("churn_risk", "u1", sp(0.123456), nil, 2),
	}
	e.produceTraits(recs...)
	e.run()
	seen := map[string]call{}
	testenv.WaitFor(t, 30*time.Second, "every call", func() bool {
		clear(seen)
		for _, h := range rc.ok() {
			if h.header.Get("Authorization") != "Basic d2s6" || h.path != "/v1/batch" { // wk:
				t.Fatalf("request %s %v", h.path, h.header)
			}
			var b struct{ Batch []call }
			if err := json.Unmarshal(h.body, &b); err != nil {
				t.Fatal(err)
			}
			for _, c := range b.Batch {
				seen[c.MessageID] = c
			}
		}
		return len(seen) == 2*len(recs)
	})
	wantScore := []any{0.123, 12.25, nil}
	wantPrev := []any{nil, 10.5, 0.123}
	for i, r := range recs {
		id, tr := seen[r.ChangeID], seen[r.ChangeID+"-track"]
		if id.Type != "identify" || id.UserID != r.ID || !id.Timestamp.Equal(r.At) || fmt.Sprint(id.Traits) != fmt.Sprint(map[string]any{r.Trait: wantScore[i]}) {
			t.Errorf("identify %+v for %+v", id, r)
		}
		if tr.Type != "track" || tr.Event != TraitChanged || tr.UserID != r.ID ||
			fmt.Sprint(tr.Properties) != fmt.Sprint(map[string]any{"trait": r.Trait, "score": wantScore[i], "previous": wantPrev[i], "model_version": "abc123"}) {
			t.Errorf("track %+v for %+v", tr, r)
		}
	}
}

// TestTraitKafkaDestination: on a real broker, a kafka destination copies
// trait changes and segment changes, each with its kind in pulse-kind and
// its change id in pulse-change-id, the value as on the topic.
func TestTraitKafkaDestination(t *testing.T) {
	brokers := testenv.Kafka(t)
	out := testenv.Topic(t, "traits-out")
	e := newEnv(t, brokers, traitsConfig+fmt.Sprintf(`
segments:
  - {name: vip, rule: 'orders > 1'}
destinations:
  - {name: copy, type: kafka, topic: %s, segments: [vip], traits: [churn_risk], start_from: beginning}
`, out))
	ts := traitScore("churn_risk", "u1", sp(0.1), sp(0.2), 0)
	seg := change("vip", "u1", true, 1, nil)
	e.produceTraits(ts, traitScore("churn_risk", "u2", sp(0.1), sp(0.1001), 2)) // the second is jitter
	e.produce(seg)
	e.run()
	got := readTopic(t, e, out, 2)
	if len(got) != 2 {
		t.Fatalf("%d records copied, want 2 (the jitter is not)", len(got))
	}
	kinds := map[string]string{}
	for _, r := range got {
		if len(r.Headers) != 2 || r.Headers[0].Key != ChangeIDHeader || r.Headers[1].Key != KindHeaderKafka || string(r.Key) != "u1" {
			t.Fatalf("record %s headers %v", r.Value, r.Headers)
		}
		kinds[string(r.Headers[0].Value)] = string(r.Headers[1].Value)
		switch string(r.Headers[1].Value) {
		case KindTrait:
			if back, err := model.DecodeTraitScore(r.Value); err != nil || back.ChangeID != ts.ChangeID || *back.Previous != 0.1 {
				t.Errorf("trait copied as %s: %v", r.Value, err)
			}
		case KindSegment:
			if back, err := segment.DecodeRecord(r.Value); err != nil || back.ID != seg.ID {
				t.Errorf("segment copied as %s: %v", r.Value, err)
			}
		}
	}
	if kinds[ts.ChangeID] != KindTrait || kinds[seg.ID] != KindSegment {
		t.Errorf("copied %v", kinds)
	}
}

// readTopic reads topic from its start until it has n records, then for
// half a second more: what came beyond n is returned too.
func readTopic(t *testing.T, e *env, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kafka.NewClient(e.cfg.Kafka, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d records on %s", len(got), n, topic)
		}
		got = append(got, fs.Records()...)
	}
	more, cancelMore := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancelMore()
	return append(got, cl.PollFetches(more).Records()...)
}
