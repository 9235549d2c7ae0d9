package scorer_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/scorer"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const testConfig = `
keys:
  - {name: reader, key: read-key, scopes: [read]}
  - {name: admin, key: admin-key, scopes: [read, admin]}
  - {name: writer, key: write-key, scopes: [write]}
  - {name: slow, key: slow-key, scopes: [read], rate_limit: 0.01, burst: 1}
features:
  - {name: orders_30d, agg: count, event: Order Completed, window: 30d}
  - {name: revenue_30d, agg: sum, event: Order Completed, field: properties.revenue, window: 30d}
  - {name: sessions_7d, agg: count, event: Session Started, window: 7d}
  - {name: days_since_last_order, expr: 'orders_30d > 0 ? 1 : -1'}
  - {name: products_viewed_24h, agg: distinct, event: Product Viewed, field: properties.product_id, window: 24h}
  - {name: cart_adds_24h, agg: count, event: Product Added, window: 24h}
  - {name: country, agg: last, field: traits.country}
segments:
  - {name: big_spenders, description: Spent over $500 in 30 days, rule: 'revenue_30d > 500'}
  - {name: carts, rule: 'cart_adds_24h > 0'}
models:
  - name: purchase_propensity
    path: models/purchase_propensity.json
    features: [orders_30d, revenue_30d, sessions_7d, days_since_last_order, products_viewed_24h, cart_adds_24h]
    labels: ["no", "yes"]
    default: "no"
  - name: spend
    path: models/spend.json
    format: logistic
    features: [orders_30d, cart_adds_24h]
`

// harness is a scorer on a real TCP port over a store.
type harness struct {
	t     *testing.T
	url   string
	dir   string
	store featurestore.Store
	srv   *scorer.Server
}

// newConfig writes the test config and its models to a temp dir.
func newConfig(t testing.TB, yaml string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "models"), 0o755); err != nil {
		t.Fatal(err)
	}
	demo, err := os.ReadFile("../examples/ecommerce/models/purchase_propensity.json")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "models/purchase_propensity.json"), string(demo))
	writeFile(t, filepath.Join(dir, "models/spend.json"), `{"intercept": -1, "weights": {"orders_30d": 0.5, "cart_adds_24h": 1}}`)
	writeFile(t, filepath.Join(dir, "pulse.yaml"), yaml)
	cfg, err := config.Load(filepath.Join(dir, "pulse.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(yaml, "data_dir:") {
		cfg.DataDir = filepath.Join(dir, "data") // each test's own (the identity copy)
	}
	return cfg
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func start(t *testing.T, cfg *config.Config, store featurestore.Store, opts ...scorer.Option) *harness {
	t.Helper()
	srv, err := scorer.New(cfg, store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := serve(t, srv)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &harness{t: t, url: "http://" + addr, dir: cfg.Dir, store: store, srv: srv}
}

// serve runs srv on a free loopback port; stop ends Serve and returns its
// error once it has returned.
func serve(t *testing.T, srv *scorer.Server) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	return ln.Addr().String(), func() error {
		cancel()
		return <-done
	}
}

// do sends a request and returns the status and body.
func (h *harness) do(method, path, key, body string) (int, string) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.url+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// seed writes users the way the stream would.
func seed(t testing.TB, st featurestore.Store, users map[string]map[string]any, segs map[string][]string) {
	t.Helper()
	var batch []featurestore.Update
	for id, f := range users {
		batch = append(batch, featurestore.Update{
			Vector: featurestore.Vector{Entity: "user", ID: id, Features: f, Segments: segs[id], UpdatedAt: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)},
			Enter:  segs[id],
		})
	}
	if err := st.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
}

func buyer() map[string]any {
	return map[string]any{"orders_30d": 3.0, "revenue_30d": 640.0, "sessions_7d": 9.0, "days_since_last_order": 1.0,
		"products_viewed_24h": 12.0, "cart_adds_24h": 2.0, "country": "FR"}
}

// answer is the documented shape of one prediction.
type answer = scorer.Prediction

func decodeAnswers(t *testing.T, body string) []answer {
	t.Helper()
	var out []answer
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("answer is not a list of predictions: %v\n%s", err, body)
	}
	return out
}

func TestPredictSmoke(t *testing.T) {
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"612": buyer()}, nil)
	h := start(t, newConfig(t, testConfig), st)
	code, body := h.do("POST", "/v1/predict", "", `{"api_key":"read-key","model":"purchase_propensity","features":[{"user":{"id":612}},{"user":{"id":"nobody"}}]}`)
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	got := decodeAnswers(t, body)
	if len(got) != 2 || !got[0].ModelUsed || got[0].Score == nil || got[1].ModelUsed || got[1].Prediction != "no" {
		t.Fatalf("unexpected answer: %s", body)
	}
}

// runUntilEnd runs a feed (Identities, Deletions, Suppressions, the RFM
// view...) until the test ends, and wants it to end without an error.
func runUntilEnd(t *testing.T, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// refusal is a request the server refuses, and what its answer says.
type refusal struct {
	method, path, key string
	code              int
	says              string
}

// checkRefusals sends each request and wants its code and words.
func (h *harness) checkRefusals(cases []refusal) {
	h.t.Helper()
	for _, c := range cases {
		if code, body := h.do(c.method, c.path, c.key, ""); code != c.code || !strings.Contains(body, c.says) {
			h.t.Errorf("%s %s with %q: %d %s, want %d saying %q", c.method, c.path, c.key, code, body, c.code, c.says)
		}
	}
}
