package destination

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/model"
	"github.com/pulse-rt/pulse/segment"
)

// TestDocsExamples: every destination in docs/destinations.md is a valid
// config, builds, and renders a change of each kind it carries (a trait
// change with a score and one without).
func TestDocsExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/destinations.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	var items []string
	for _, b := range blocks {
		body := strings.TrimPrefix(b[1], "destinations:\n")
		if strings.HasPrefix(body, "  - ") {
			items = append(items, body)
		}
	}
	if len(items) < 10 {
		t.Fatalf("%d destination examples in the doc, want the 10 of it", len(items))
	}
	traitItems := 0
	for _, item := range items {
		src := `
features:
  - {name: orders, agg: count, event: order}
models:
  - {name: churn_risk, path: churn.json, features: [orders]}
traits:
  - {name: churn_risk, model: churn_risk}
segments:
  - {name: big_spenders, rule: 'x > 1'}
  - {name: lapsing_customers, rule: 'x > 1'}
destinations:
` + item
		cfg, err := config.Parse([]byte(src), "destinations.md")
		if err != nil {
			t.Fatalf("example\n%s\n%v", item, err)
		}
		d := &cfg.Destinations[0]
		rt, closer, err := NewRoute(cfg, d, nil)
		if err != nil {
			t.Fatalf("%s: %v", d.Name, err)
		}
		if closer != nil {
			closer()
		}
		if rt.MatchTrait != nil {
			traitItems++
		}
		h, ok := rt.Sink.(*HTTP)
		if !ok {
			continue
		}
		var changes []Change
		if rt.Match != nil {
			r := segment.NewRecord(segment.Change{Segment: "big_spenders", Enter: true}, "user", `a "quoted" id`, timeZero, "c", map[string]any{"email": "a@example.com", "revenue_30d": 600.0})
			changes = append(changes, SegmentChange(r, nil))
		}
		if rt.MatchTrait != nil {
			for _, score := range []*float64{sp(0.8312), nil} {
				ts := model.TraitScore{ChangeID: "c", Trait: "churn_risk", Model: "churn_risk", Version: "3fa85f6457c2", Entity: "user", ID: `a "quoted" id`, Score: score, Previous: sp(0.7), At: timeZero}
				changes = append(changes, TraitChange(&ts, nil))
			}
		}
		for i := range changes {
			body, err := h.Render(&changes[i])
			if err != nil || !json.Valid(body) {
				t.Errorf("%s renders a %s change as %s: %v", d.Name, changes[i].Kind, body, err)
			}
		}
	}
	if traitItems < 3 {
		t.Errorf("%d trait destination examples, want the 3 of the doc", traitItems)
	}
}

var timeZero = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
