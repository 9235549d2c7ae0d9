package scorer_test

import (
	"encoding/json"
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
  - {name: days_since, expr: 'last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1'}`, 1))
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
	// The store's copy is left alone.
	v, _ := st.Get(t.Context(), "user", "612")
	if v.Features["days_since"] != 0.0 {
		t.Fatalf("the stored vector was modified: %v", v.Features["days_since"])
	}
}
