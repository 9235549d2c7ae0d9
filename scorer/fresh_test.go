package scorer_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDerivedAsOfNow: a derived feature that reads `now` is answered as of
// the request, not as of when the stream last wrote the vector.
func TestDerivedAsOfNow(t *testing.T) {
	cfg := newConfig(t, strings.Replace(testConfig,
		`  - {name: country, agg: last, field: traits.country}`,
		`  - {name: country, agg: last, field: traits.country}
  - {name: last_order_at, agg: last, event: Order Completed, field: timestamp}
  - {name: days_since, expr: 'last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1'}`, 1)+`
  - name: lapse
    path: models/lapse.json
    format: logistic
    features: [days_since]
`)
	// score = sigmoid(days_since - 5): 0.007 with the stored 0, 0.99 with 10.
	writeFile(t, filepath.Join(cfg.Dir, "models/lapse.json"), `{"intercept": -5, "weights": {"days_since": 1}}`)
	st := newMemStore()
	tenDaysAgo := time.Now().Add(-10*24*time.Hour - time.Hour)
	user := buyer()
	user["last_order_at"] = float64(tenDaysAgo.UnixMilli())
	user["days_since"] = 0.0 // what the stream computed back then
	seed(t, st, map[string]map[string]any{"612": user}, nil)
	h := start(t, cfg, st)

	code, body := h.do("GET", "/v1/entities/user/612", "read-key", "")
	if code != 200 {
		t.Fatalf("entity: %d %s", code, body)
	}
	var e struct{ Features map[string]any }
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatal(err)
	}
	if e.Features["days_since"] != 10.0 {
		t.Fatalf("days_since = %v, want 10 (as of now)", e.Features["days_since"])
	}
	if e.Features["orders_30d"] != 3.0 {
		t.Fatalf("stored features changed: %v", e.Features)
	}
	// Predictions see it too.
	code, body = h.do("POST", "/v1/predict", "read-key", `{"model":"lapse","features":[{"user":{"id":612}}]}`)
	if code != 200 {
		t.Fatalf("predict: %d %s", code, body)
	}
	if a := decodeAnswers(t, body); len(a) != 1 || !a[0].ModelUsed || a[0].Score == nil || *a[0].Score < 0.99 {
		t.Fatalf("predict on days_since as of now: %s", body)
	}
	// The store's copy is left alone.
	v, _ := st.Get(t.Context(), "user", "612")
	if v.Features["days_since"] != 0.0 {
		t.Fatalf("the stored vector was modified: %v", v.Features["days_since"])
	}
}
