package config

import (
	"strings"
	"testing"
	"time"
)

func TestDestinationsDefaults(t *testing.T) {
	c, err := Parse([]byte(`
segments:
  - {name: big_spenders, rule: 'x > 1'}
  - {name: lapsing, rule: 'x > 1'}
destinations:
  - name: crm
    type: segment
    write_key: wk
    segments: [big_spenders, "rfm:*"]
    rate_limit: {requests_per_second: 50}
  - name: braze
    type: http
    url: https://rest.iad-01.braze.com/users/track
    headers: {Authorization: "Bearer x"}
    template: '{"attributes": [{"external_id": {{json .ID}}, "in_{{.Segment}}": {{.Entered}}}]}'
    segments: [lapsing]
  - {name: hook, type: webhook, url: "http://127.0.0.1:9/h", secret: s, segments: ["*"], max_retries: 0}
  - {name: copy, type: kafka, topic: audiences, segments: [lapsing]}
`), "d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := c.Destinations
	if d[0].URL != "https://api.segment.io" || d[0].BatchSize != 100 || d[0].Retries() != 8 || d[0].Timeout.D() != 10*time.Second ||
		d[0].Concurrency != 1 || d[0].StartFrom != "end" || d[0].RateLimit.RequestsPerSecond != 50 || d[0].Line != 6 {
		t.Errorf("segment defaults: %+v", d[0])
	}
	if d[1].Method != "POST" || d[1].BatchSize != 1 || d[2].BatchSize != 1 || d[2].Retries() != 0 || d[3].BatchSize != 500 {
		t.Errorf("defaults: %+v", d)
	}
	f := func(d *Destination, seg string, want bool) {
		t.Helper()
		if d.Matches(seg) != want {
			t.Errorf("%s matches %s: %v, want %v", d.Name, seg, !want, want)
		}
	}
	f(&d[0], "big_spenders", true)
	f(&d[0], "rfm:champions", true)
	f(&d[0], "lapsing", false)
	f(&d[2], "anything", true)
}

// TestDestinationProblems: every problem at once, each on its line.
func TestDestinationProblems(t *testing.T) {
	_, err := Parse([]byte(`
segments:
  - {name: a, rule: 'x > 1', webhook: {url: "http://127.0.0.1:9/a"}}
destinations:
  - name: hook
    type: webhook
    url: http://127.0.0.1:9/h
    segments: [a]
  - name: hook
    type: segment
    segments: [nope, "rfm:[", a]
    template: '{}'
  - name: "bad name"
    type: http
    url: ftp://x
    template: '{{.ID'
    method: BREW
    auth: {bearer: t, username: u}
    segments: [a]
    batch_size: 5
  - name: k
    type: kafka
    segments: [a]
    brokers: [nohost]
    max_retries: 101
    timeout: 1ms
    concurrency: 65
    rate_limit: {records_per_second: -1}
    start_from: middle
  - name: x
    type: pigeon
    segments: []
`), "d.yaml")
	errs, ok := AsErrors(err)
	if !ok {
		t.Fatalf("want config errors, got %v", err)
	}
	want := []string{
		"d.yaml:3: segments[a].webhook.secret: required",
		"d.yaml:5: destinations[hook].secret: required",
		"d.yaml:9: destinations[hook].name: duplicate destination name",
		"d.yaml:11: destinations[hook].segments: no segment named \"nope\"",
		"d.yaml:11: destinations[hook].segments: invalid glob \"rfm:[\"",
		"d.yaml:12: destinations[hook].template: not used by a segment destination",
		"d.yaml:9: destinations[hook].write_key: required",
		"d.yaml:13: destinations[bad name].name: must be letters",
		"d.yaml:15: destinations[bad name].url: required: an http(s) URL",
		"d.yaml:16: destinations[bad name].template: template: bad name:1: unclosed action",
		"d.yaml:17: destinations[bad name].method: unknown method \"BREW\"",
		"d.yaml:18: destinations[bad name].auth: a bearer token or a username and password, not both",
		"d.yaml:20: destinations[bad name].batch_size: http destinations send one change per request",
		"d.yaml:21: destinations[k].topic: required",
		"d.yaml:24: destinations[k].brokers: broker \"nohost\" must be host:port",
		"d.yaml:25: destinations[k].max_retries: must be between 0 and 100",
		"d.yaml:26: destinations[k].timeout: must be between 10ms and 5m",
		"d.yaml:27: destinations[k].concurrency: must be between 1 and 64",
		"d.yaml:28: destinations[k].rate_limit: must not be negative",
		"d.yaml:29: destinations[k].start_from: must be end or beginning, got \"middle\"",
		"d.yaml:31: destinations[x].type: unknown type \"pigeon\"",
		"d.yaml:32: destinations[x].segments: required (or traits:)",
	}
	got := errs.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(errs), len(want), got)
	}
}

// TestTraitDestinations: traits instead of (or besides) segments, their
// defaults and matching.
func TestTraitDestinations(t *testing.T) {
	c, err := Parse([]byte(autoBase+`
traits:
  - {name: churn_risk, model: churn}
  - {name: ltv_score, model: churn}
segments:
  - {name: vip, rule: 'orders_365d > 3'}
destinations:
  - {name: crm, type: segment, write_key: wk, traits: [churn_risk], trait_track: true}
  - {name: both, type: webhook, url: "http://127.0.0.1:9/h", secret: s, segments: [vip], traits: ["*"], decimals: 3, thresholds: [0.5, 0.8]}
`), "d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := c.Destinations
	if d[0].TraitDecimals() != 2 || !d[0].TraitTrack || len(d[0].Segments) != 0 || d[0].Thresholds != nil {
		t.Errorf("crm: %+v", d[0])
	}
	if d[1].TraitDecimals() != 3 || len(d[1].Thresholds) != 2 || d[1].Thresholds[1] != 0.8 {
		t.Errorf("both: %+v", d[1])
	}
	for _, c := range []struct {
		d     *Destination
		trait string
		want  bool
	}{{&d[0], "churn_risk", true}, {&d[0], "ltv_score", false}, {&d[1], "ltv_score", true}, {&d[1], "anything", true}} {
		if c.d.MatchesTrait(c.trait) != c.want {
			t.Errorf("%s matches trait %s: %v, want %v", c.d.Name, c.trait, !c.want, c.want)
		}
	}
	if d[0].Matches("vip") || !d[1].Matches("vip") {
		t.Error("segment matching changed")
	}
}

// TestTraitDestinationProblems: each trait key's problems, named by field.
func TestTraitDestinationProblems(t *testing.T) {
	_, err := Parse([]byte(autoBase+`
traits:
  - {name: churn_risk, model: churn}
segments:
  - {name: vip, rule: 'orders_365d > 3'}
destinations:
  - name: a
    type: http
    url: http://127.0.0.1:9/a
    template: '{}'
    traits: [churn_risk, nope, "x["]
    decimals: 16
    thresholds: [0.8, 0.5, 0.5]
  - name: b
    type: webhook
    url: http://127.0.0.1:9/b
    secret: s
    segments: [vip]
    decimals: 1
    thresholds: [0.5]
    trait_track: true
  - {name: c, type: kafka, topic: t}
`), "d.yaml")
	errs, ok := AsErrors(err)
	if !ok {
		t.Fatalf("want config errors, got %v", err)
	}
	want := []string{
		`d.yaml:32: destinations[a].traits: no trait named "nope"`,
		`d.yaml:32: destinations[a].traits: invalid glob "x["`,
		`d.yaml:33: destinations[a].decimals: must be between 0 and 15, got 16`,
		`d.yaml:34: destinations[a].thresholds: must be in increasing order without repeats, got 0.5 after 0.8`,
		`d.yaml:34: destinations[a].thresholds: must be in increasing order without repeats, got 0.5 after 0.5`,
		`d.yaml:40: destinations[b].decimals: only used with traits:`,
		`d.yaml:41: destinations[b].thresholds: only used with traits:`,
		`d.yaml:42: destinations[b].trait_track: not used by a webhook destination`,
		`d.yaml:42: destinations[b].trait_track: only used with traits:`,
		`d.yaml:43: destinations[c].segments: required (or traits:)`,
	}
	got := errs.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(errs), len(want), got)
	}
}
