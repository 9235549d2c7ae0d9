package scorer_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/model"
	"github.com/pulse-rt/pulse/scorer"
)

var demoFeatures = []string{"orders_30d", "revenue_30d", "sessions_7d", "days_since_last_order", "products_viewed_24h", "cart_adds_24h"}

// demoScore is what the demo model says for f, computed with package model
// directly: the scorer must agree with it exactly.
func demoScore(t *testing.T, f map[string]any) float64 {
	t.Helper()
	data, err := os.ReadFile("../examples/ecommerce/models/purchase_propensity.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Parse(data, "")
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float64, len(demoFeatures))
	for i, name := range demoFeatures {
		x[i] = math.NaN() // a feature with no value yet
		if v, ok := f[name].(float64); ok {
			x[i] = v
		}
	}
	out := make([]float64, 1)
	m.Predict(x, out)
	return out[0]
}

// testPredict is the end-to-end predict behaviour every store must give.
func testPredict(t *testing.T, st featurestore.Store) {
	noValue := buyer()
	noValue["days_since_last_order"] = nil
	seed(t, st, map[string]map[string]any{"612": buyer(), "613": {"orders_30d": 0.0, "country": "DE"}, "614": noValue}, nil)
	h := start(t, newConfig(t, testConfig), st)

	code, body := h.do("POST", "/v1/predict", "", `{"api_key":"read-key","model":"purchase_propensity","features":[
		{"user":{"id":612}},
		{"user":{"id":"7","orders_30d":4,"revenue_30d":100,"sessions_7d":2,"days_since_last_order":3,"products_viewed_24h":5,"cart_adds_24h":1}},
		{"user":{"id":612,"cart_adds_24h":0,"orders_30d":"0"}},
		{"user":{"id":"ghost"}},
		{"user":{"id":613}},
		{"user":{"id":614}}]}`)
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	got := decodeAnswers(t, body)
	if len(got) != 6 {
		t.Fatalf("want 6 answers in order, got %d: %s", len(got), body)
	}
	// Stored features.
	want := demoScore(t, buyer())
	checkUsed(t, "stored", got[0], want)
	// All features inline, for an entity the store has never seen.
	inline := map[string]any{"orders_30d": 4.0, "revenue_30d": 100.0, "sessions_7d": 2.0, "days_since_last_order": 3.0, "products_viewed_24h": 5.0, "cart_adds_24h": 1.0}
	checkUsed(t, "inline", got[1], demoScore(t, inline))
	// Inline features override stored ones.
	over := buyer()
	over["cart_adds_24h"], over["orders_30d"] = 0.0, 0.0
	checkUsed(t, "override", got[2], demoScore(t, over))
	if *got[2].Score == *got[0].Score {
		t.Errorf("override did not change the score")
	}
	// Unknown entity: the default, not an error.
	if got[3].ModelUsed || got[3].Prediction != "no" || got[3].Score != nil || !strings.Contains(got[3].Reason, "not found") {
		t.Errorf("unknown entity: got %+v", got[3])
	}
	// A vector without some of the model's features.
	if got[4].ModelUsed || got[4].Prediction != "no" || !strings.Contains(got[4].Reason, "missing features: revenue_30d") {
		t.Errorf("missing features: got %+v", got[4])
	}
	// A feature with no value yet is a missing input, not a reason to
	// skip the model.
	checkUsed(t, "no value yet", got[5], demoScore(t, noValue))
	seen := map[string]bool{}
	for i, a := range got {
		if len(a.UUID) != 36 || a.UUID[14] != '4' || seen[a.UUID] {
			t.Errorf("answer %d: uuid %q is not a fresh v4 UUID", i, a.UUID)
		}
		seen[a.UUID] = true
	}
}

func checkUsed(t *testing.T, what string, a answer, want float64) {
	t.Helper()
	if !a.ModelUsed || a.Score == nil {
		t.Errorf("%s: model not used: %+v", what, a)
		return
	}
	if math.Abs(*a.Score-want) > 1e-12 {
		t.Errorf("%s: score %v, want %v", what, *a.Score, want)
	}
	label := "no"
	if want >= 0.5 {
		label = "yes"
	}
	if a.Prediction != label {
		t.Errorf("%s: prediction %v for score %v, want %q", what, a.Prediction, want, label)
	}
}

func TestPredictPebble(t *testing.T) {
	st, err := featurestore.OpenPebble(t.TempDir(), featurestore.PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	testPredict(t, st)
}

func TestPredictRedis(t *testing.T) {
	addr, db := testenv.RedisDB(t)
	st, err := featurestore.OpenRedis(config.Redis{Addr: addr, DB: db, KeyPrefix: "pulse:"}, featurestore.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	testPredict(t, st)
}

func TestPredictMemory(t *testing.T) { testPredict(t, newMemStore()) }

// TestStoreCacheMetrics: /metrics counts what the Redis near cache
// answered: a user's first prediction reads Redis, the next ones do not.
func TestStoreCacheMetrics(t *testing.T) {
	addr, db := testenv.RedisDB(t)
	st, err := featurestore.OpenRedis(config.Redis{Addr: addr, DB: db, KeyPrefix: testenv.RedisKeyPrefix(t)}, featurestore.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	seed(t, st, map[string]map[string]any{"612": buyer()}, nil)
	// Redis reports the write to the cache too; once that is in, the
	// first read's fill stays.
	for deadline := time.Now().Add(5 * time.Second); st.CacheStats().Invalidations == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the seed's write was never reported to the near cache")
		}
	}
	h := start(t, newConfig(t, testConfig), st)
	counter := func(name string) int {
		t.Helper()
		_, metrics := h.do("GET", "/metrics", "", "")
		m := regexp.MustCompile(`(?m)^` + name + ` (\d+)$`).FindStringSubmatch(metrics)
		if m == nil {
			t.Fatalf("/metrics lacks %s", name)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	hits, misses := counter("pulse_scorer_store_cache_hits_total"), counter("pulse_scorer_store_cache_misses_total")
	// Predictions of one user until the cache answers one: each lookup is
	// counted once, the first reads Redis, and a later one is a hit. A
	// fill is kept only once the cache's ping confirms no write raced it,
	// which on a loaded machine can take a few reads.
	n, dh, dm := 0, 0, 0
	for deadline := time.Now().Add(10 * time.Second); dh == 0 && time.Now().Before(deadline); n++ {
		if code, body := h.do("POST", "/v1/predict", "", `{"api_key":"read-key","model":"purchase_propensity","features":[{"user":{"id":612}}]}`); code != 200 {
			t.Fatalf("status %d: %s", code, body)
		}
		dh = counter("pulse_scorer_store_cache_hits_total") - hits
		dm = counter("pulse_scorer_store_cache_misses_total") - misses
		if n == 0 && dm != 1 {
			t.Fatalf("the first prediction: misses +%d, hits +%d; want one miss", dm, dh)
		}
		if dh+dm != n+1 {
			t.Fatalf("after %d predictions of one user: hits +%d, misses +%d; want each lookup counted once", n+1, dh, dm)
		}
	}
	if dh == 0 {
		t.Errorf("%d predictions of one user, all misses: the near cache never answered", n)
	}
}

func TestPredictErrors(t *testing.T) {
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"612": buyer()}, nil)
	cfg := newConfig(t, testConfig)
	h := start(t, cfg, st)
	many := `{"model":"purchase_propensity","features":[` + strings.Repeat(`{"user":{"id":1}},`, 1000) + `{"user":{"id":1}}]}`
	f := func(name, method, key, body string, wantCode int, wantErr string) {
		t.Helper()
		code, got := h.do(method, "/v1/predict", key, body)
		if code != wantCode || !strings.Contains(got, wantErr) || !strings.HasPrefix(got, `{"success":false,"error":`) {
			t.Errorf("%s: got %d %s, want %d with %q", name, code, got, wantCode, wantErr)
		}
	}
	ok := `{"model":"purchase_propensity","features":[{"user":{"id":612}}]}`
	f("no key", "POST", "", ok, 401, "missing API key")
	f("unknown key", "POST", "nope", ok, 401, "unknown API key")
	f("unknown key in body", "POST", "", `{"api_key":"nope","model":"purchase_propensity","features":[]}`, 401, "unknown API key")
	f("write-only key", "POST", "write-key", ok, 403, "needs read")
	f("bad JSON", "POST", "read-key", `{"model":"purchase_propensity","features":[{"user":`, 400, "invalid JSON")
	f("not an object", "POST", "read-key", `[1,2]`, 400, "invalid JSON")
	f("no model", "POST", "read-key", `{"features":[{"user":{"id":612}}]}`, 400, "model: required")
	f("unknown model", "POST", "read-key", `{"model":"nope","features":[{"user":{"id":612}}]}`, 404, `unknown model \"nope\"`)
	f("no features", "POST", "read-key", `{"model":"purchase_propensity"}`, 400, "features: required")
	f("features not a list", "POST", "read-key", `{"model":"purchase_propensity","features":{"user":{"id":1}}}`, 400, "features: want a list")
	f("wrong entity", "POST", "read-key", `{"model":"purchase_propensity","features":[{"account":{"id":1}}]}`, 400, `features[0]: the model scores \"user\" entities, got \"account\"`)
	f("two entities", "POST", "read-key", `{"model":"purchase_propensity","features":[{"user":{"id":1},"x":{}}]}`, 400, "features[0]: want exactly one key")
	f("no id", "POST", "read-key", `{"model":"purchase_propensity","features":[{"user":{"id":1}},{"user":{"orders_30d":1}}]}`, 400, "features[1].user.id: required")
	f("bad id", "POST", "read-key", `{"model":"purchase_propensity","features":[{"user":{"id":[1]}}]}`, 400, "features[0].user.id: want a non-empty string or a number")
	f("bad inline", "POST", "read-key", `{"model":"purchase_propensity","features":[{"user":{"id":1,"orders_30d":"many"}}]}`, 400, `features[0].user.orders_30d: want a number, got the string \"many\"`)
	f("too many rows", "POST", "read-key", many, 413, "over the 1000 row limit")
	f("GET", "GET", "read-key", "", 405, "use POST")
	// A problem with one field names it, and the reason, for a program
	// too; a body that is not JSON names none.
	for _, c := range []struct{ body, field, reason string }{
		{`{"model":"purchase_propensity","features":[{"user":{"id":1}},{"user":{"orders_30d":1}}]}`, "features[1].user.id", "required"},
		{`{"model":"purchase_propensity","features":[{"account":{"id":1}}]}`, "features[0]", `the model scores "user" entities, got "account"`},
		{`{"features":[{"user":{"id":612}}]}`, "model", `required, e.g. {"model": "purchase_propensity", "features": [{"user": {"id": 612}}]}`},
		{many, "features", "over the 1000 row limit"},
		{`{"model":"purchase_propensity","features":[{"user":`, "", ""},
	} {
		_, got := h.do("POST", "/v1/predict", "read-key", c.body)
		var e struct{ Error, Field, Reason string }
		if err := json.Unmarshal([]byte(got), &e); err != nil || e.Field != c.field || e.Reason != c.reason ||
			(c.field != "" && e.Error != c.field+": "+c.reason) {
			t.Errorf("%.60s: got %s, want field %q reason %q", c.body, got, c.field, c.reason)
		}
	}
	if code, _ := h.do("POST", "/v1/predict", "slow-key", ok); code != 200 {
		t.Errorf("rate-limited key, first request: %d", code)
	}
	f("over the rate limit", "POST", "slow-key", ok, 429, "rate limit exceeded")

	st.fail(errors.New("connection refused"))
	f("store down", "POST", "read-key", ok, 503, "online store is unavailable")
}

func TestPredictIDs(t *testing.T) {
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"12345678901234567890": buyer(), "a b/c": buyer()}, nil)
	h := start(t, newConfig(t, testConfig), st)
	_, body := h.do("POST", "/v1/predict", "read-key", `{"model":"purchase_propensity","features":[{"user":{"id":12345678901234567890}},{"user":{"id":"a b/c"}}]}`)
	for i, a := range decodeAnswers(t, body) {
		if !a.ModelUsed {
			t.Errorf("row %d: id not matched exactly: %+v", i, a)
		}
	}
}

func TestPredictLogisticByName(t *testing.T) {
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"1": {"orders_30d": 2.0, "cart_adds_24h": 1.0}}, nil)
	h := start(t, newConfig(t, testConfig), st)
	_, body := h.do("POST", "/v1/predict", "read-key", `{"model":"spend","features":[{"user":{"id":1}}]}`)
	a := decodeAnswers(t, body)[0]
	want := 1 / (1 + math.Exp(-(-1 + 0.5*2 + 1)))
	// No labels: the prediction is the score.
	if !a.ModelUsed || math.Abs(*a.Score-want) > 1e-12 || a.Prediction != *a.Score {
		t.Fatalf("got %s, want score %v", body, want)
	}
}

func TestPredictMulticlassAndRegression(t *testing.T) {
	var feats, list []string
	for i := range 8 {
		feats = append(feats, fmt.Sprintf("  - {name: f%d, agg: last, field: traits.f%d}", i, i))
		list = append(list, fmt.Sprintf("f%d", i))
	}
	yaml := "keys: [{name: r, key: read-key, scopes: [read]}]\nfeatures:\n" + strings.Join(feats, "\n") + `
models:
  - {name: classes, path: models/multi.txt, features: [` + strings.Join(list, ",") + `], labels: [red, green, blue], default: unknown}
  - {name: value, path: models/reg.json, features: [` + strings.Join(list, ",") + `], default: 0}
`
	cfg := newConfig(t, yaml)
	copyFile(t, "../model/testdata/golden/lgb_multiclass/model.txt", filepath.Join(cfg.Dir, "models/multi.txt"))
	copyFile(t, "../model/testdata/golden/xgb_regression/model.json", filepath.Join(cfg.Dir, "models/reg.json"))
	st := newMemStore()
	row := map[string]any{}
	x := make([]float64, 8)
	for i := range 8 {
		x[i] = float64(i%3) - 0.5
		row[fmt.Sprintf("f%d", i)] = x[i]
	}
	seed(t, st, map[string]map[string]any{"1": row}, nil)
	h := start(t, cfg, st)

	_, body := h.do("POST", "/v1/predict", "read-key", `{"model":"classes","features":[{"user":{"id":1}},{"user":{"id":2}}]}`)
	got := decodeAnswers(t, body)
	probs := predictFile(t, filepath.Join(cfg.Dir, "models/multi.txt"), x)
	best := 0
	for c := range probs {
		if probs[c] > probs[best] {
			best = c
		}
	}
	if !got[0].ModelUsed || got[0].Prediction != []string{"red", "green", "blue"}[best] || *got[0].Score != probs[best] || len(got[0].Scores) != 3 {
		t.Errorf("multiclass: got %s, want class %d of %v", body, best, probs)
	}
	if got[1].ModelUsed || got[1].Prediction != "unknown" {
		t.Errorf("multiclass default: got %+v", got[1])
	}

	_, body = h.do("POST", "/v1/predict", "read-key", `{"model":"value","features":[{"user":{"id":1}},{"user":{"id":2}}]}`)
	got = decodeAnswers(t, body)
	v := predictFile(t, filepath.Join(cfg.Dir, "models/reg.json"), x)[0]
	if !got[0].ModelUsed || got[0].Prediction != v || *got[0].Score != v {
		t.Errorf("regression: got %s, want %v", body, v)
	}
	if got[1].ModelUsed || got[1].Prediction != 0.0 {
		t.Errorf("regression default: got %+v", got[1])
	}
}

func predictFile(t *testing.T, path string, x []float64) []float64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Parse(data, "")
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float64, m.NumClass())
	m.Predict(x, out)
	return out
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(b))
}

func TestModelRefusedAtStart(t *testing.T) {
	cfg := newConfig(t, testConfig)
	writeFile(t, filepath.Join(cfg.Dir, "models/spend.json"), `{"intercept": 0, "weights": {"unknown_feature": 1}}`)
	h := start(t, cfg, newMemStore())
	code, body := h.do("POST", "/v1/predict", "read-key", `{"model":"spend","features":[{"user":{"id":1}}]}`)
	if code != 503 || !strings.Contains(body, "unknown_feature") {
		t.Errorf("got %d %s, want 503 naming the problem", code, body)
	}
	// The other model serves.
	if code, body := h.do("POST", "/v1/predict", "read-key", `{"model":"purchase_propensity","features":[{"user":{"id":1}}]}`); code != 200 {
		t.Errorf("good model: %d %s", code, body)
	}
}

func TestModelConfigMismatch(t *testing.T) {
	f := func(yamlModel, wantErr string) {
		t.Helper()
		cfg := newConfig(t, strings.Replace(testConfig, "models:\n", "models:\n"+yamlModel, 1))
		srv, err := scorer.New(cfg, newMemStore())
		if err != nil {
			t.Fatal(err)
		}
		status, _ := srv.Reload()
		if status[0].Error == "" || !strings.Contains(status[0].Error, wantErr) {
			t.Errorf("got %+v, want error with %q", status[0], wantErr)
		}
	}
	f("  - {name: x, path: models/purchase_propensity.json, features: [orders_30d], labels: [a, b]}\n", "reads 6 features but the config lists 1")
	f("  - {name: x, path: models/purchase_propensity.json, features: [revenue_30d, orders_30d, sessions_7d, days_since_last_order, products_viewed_24h, cart_adds_24h]}\n", "list them in the model's order")
	f("  - {name: x, path: models/purchase_propensity.json, features: [orders_30d, revenue_30d, sessions_7d, days_since_last_order, products_viewed_24h, cart_adds_24h], labels: [a, b, c]}\n", "needs 2 labels")
	f("  - {name: x, path: models/nothing.json, features: [orders_30d]}\n", "no such file")
}
