package scorer_test

import (
	"testing"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/scorer"
)

// TestExampleModel: the config `pulse dev` runs ships a model that loads and
// answers model_used:true for a user whose vector the stream wrote (every
// configured feature present, as the stream writes them).
func TestExampleModel(t *testing.T) {
	cfg, err := config.Load("../examples/ecommerce/pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range cfg.Models {
		if err := scorer.CheckModel(cfg, m); err != nil {
			t.Fatalf("example model %s: %v", m.Name, err)
		}
	}
	feats := map[string]any{}
	for _, f := range cfg.Features {
		feats[f.Name] = 0.0
	}
	feats["orders_30d"], feats["revenue_30d"], feats["days_since_last_order"] = 1.0, 42.0, 0.0
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"612": feats}, nil)
	h := start(t, cfg, st)
	code, body := h.do("POST", "/v1/predict", "dev-read-key", `{"model":"purchase_propensity","features":[{"user":{"id":"612"}}]}`)
	if code != 200 || !decodeAnswers(t, body)[0].ModelUsed {
		t.Fatalf("first predict of a newcomer: %d %s", code, body)
	}
}
