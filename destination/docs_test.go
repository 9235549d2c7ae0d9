package destination

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/segment"
)

// TestDocsExamples: every destination in docs/destinations.md is a valid
// config, builds, and renders a change.
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
	if len(items) < 7 {
		t.Fatalf("%d destination examples in the doc, want the 7 of it", len(items))
	}
	for _, item := range items {
		src := `
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
		if h, ok := rt.Sink.(*HTTP); ok {
			r := segment.NewRecord(segment.Change{Segment: "big_spenders", Enter: true}, "user", `a "quoted" id`, timeZero, "c", map[string]any{"email": "a@example.com", "revenue_30d": 600.0})
			c := SegmentChange(r, nil)
			body, err := h.Render(&c)
			if err != nil || !json.Valid(body) {
				t.Errorf("%s renders %s: %v", d.Name, body, err)
			}
		}
	}
}

var timeZero = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
