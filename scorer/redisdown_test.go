package scorer_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// TestPredictRedisDown: the online store's redis-server is killed
// (SIGKILL) while the scorer serves. Every prediction is answered, 503
// with Retry-After naming the store, within the store's timeout (never
// a hang), and once Redis is back predictions are served again on their
// own, from the data Redis kept.
func TestPredictRedisDown(t *testing.T) {
	rs := testenv.StartRedis(t)
	const timeout = 300 * time.Millisecond
	st, err := featurestore.OpenRedis(config.Redis{Addr: rs.Addr(), KeyPrefix: testenv.RedisKeyPrefix(t)}, featurestore.RedisOptions{Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	seed(t, st, map[string]map[string]any{"612": buyer()}, nil)
	h := start(t, newConfig(t, testConfig), st)
	predict := `{"api_key":"read-key","model":"purchase_propensity","features":[{"user":{"id":612}}]}`
	if code, body := h.do("POST", "/v1/predict", "", predict); code != 200 || !strings.Contains(body, `"model_used":true`) {
		t.Fatalf("before: %d %s", code, body)
	}
	if err := rs.Kill(); err != nil {
		t.Fatal(err)
	}
	// A user the near cache holds may be answered from it until the
	// cache hears its tracking connection is gone; then, and for any
	// other user at once, 503.
	other := `{"api_key":"read-key","model":"purchase_propensity","features":[{"user":{"id":613}}]}`
	var longest time.Duration
	unavailable := 0
	for i := range 40 {
		body := predict
		if i%2 == 1 {
			body = other
		}
		start := time.Now()
		code, got := h.do("POST", "/v1/predict", "", body)
		longest = max(longest, time.Since(start))
		switch {
		case code == 503 && strings.Contains(got, "online store is unavailable"):
			unavailable++
		case code == 200 && body == predict && unavailable < 2:
		default:
			t.Fatalf("with Redis down: %d %s, want 503 naming the store", code, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if longest > timeout+500*time.Millisecond {
		t.Errorf("with Redis down a prediction took %s, want at most the store timeout %s (and some slack)", longest, timeout)
	}
	if err := rs.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "predictions served again", func() bool {
		code, body := h.do("POST", "/v1/predict", "", predict)
		return code == 200 && strings.Contains(body, `"model_used":true`)
	})
}

// TestPredictRedisBlackHole: the network to Redis drops every byte
// (toxiproxy's timeout toxic, both ways: no reset, connections hang). Every
// prediction is answered 503 within the store's timeout and some slack,
// none hangs, and once the network heals predictions are served again.
func TestPredictRedisBlackHole(t *testing.T) {
	proxy := testenv.StartProxy(t, testenv.Redis(t))
	const timeout = 300 * time.Millisecond
	st, err := featurestore.OpenRedis(config.Redis{Addr: proxy.Addr(), KeyPrefix: testenv.RedisKeyPrefix(t)}, featurestore.RedisOptions{Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	seed(t, st, map[string]map[string]any{"612": buyer()}, nil)
	h := start(t, newConfig(t, testConfig), st)
	predict := func(id int) (int, string) {
		return h.do("POST", "/v1/predict", "", fmt.Sprintf(`{"api_key":"read-key","model":"purchase_propensity","features":[{"user":{"id":%d}}]}`, id))
	}
	if code, body := predict(612); code != 200 || !strings.Contains(body, `"model_used":true`) {
		t.Fatalf("before: %d %s", code, body)
	}
	proxy.BlackHole()
	var longest time.Duration
	for i := range 10 {
		start := time.Now()
		code, body := predict(1000 + i) // not in the near cache
		longest = max(longest, time.Since(start))
		if code != 503 || !strings.Contains(body, "online store is unavailable") {
			t.Fatalf("black hole: %d %s, want 503 naming the store", code, body)
		}
	}
	if longest > 3*timeout+time.Second {
		t.Errorf("with Redis black-holed a prediction took %s, want about the store timeout %s", longest, timeout)
	}
	proxy.Heal()
	testenv.WaitFor(t, 15*time.Second, "predictions served again", func() bool {
		code, body := predict(612)
		return code == 200 && strings.Contains(body, `"model_used":true`)
	})
}

// TestPredictRedisResetsAndLatency: the network to Redis resets every
// connection (TCP RST, toxiproxy's reset_peer), then adds 100 ms to every
// answer. Resets: each prediction is answered 503 at once. Latency under
// the store's timeout: answered 200, about that much later. Healed:
// served as before.
func TestPredictRedisResetsAndLatency(t *testing.T) {
	proxy := testenv.StartProxy(t, testenv.Redis(t))
	const timeout = 500 * time.Millisecond
	st, err := featurestore.OpenRedis(config.Redis{Addr: proxy.Addr(), KeyPrefix: testenv.RedisKeyPrefix(t)}, featurestore.RedisOptions{Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ids := map[string]map[string]any{}
	for i := range 40 {
		ids[fmt.Sprint(2000+i)] = buyer()
	}
	seed(t, st, ids, nil)
	h := start(t, newConfig(t, testConfig), st)
	predict := func(id int) (int, string, time.Duration) {
		start := time.Now()
		code, body := h.do("POST", "/v1/predict", "", fmt.Sprintf(`{"api_key":"read-key","model":"purchase_propensity","features":[{"user":{"id":%d}}]}`, id))
		return code, body, time.Since(start)
	}
	proxy.ResetPeer(0)
	for i := range 10 {
		code, body, took := predict(1000 + i)
		if code != 503 || took > timeout+500*time.Millisecond {
			t.Fatalf("connections reset: %d %s after %s, want 503 within the store timeout", code, body, took)
		}
	}
	proxy.Heal()
	proxy.Latency(100 * time.Millisecond)
	testenv.WaitFor(t, 10*time.Second, "predictions served through the latency", func() bool {
		code, body, took := predict(2000)
		return code == 200 && strings.Contains(body, `"model_used":true`) && took >= 100*time.Millisecond
	})
	proxy.Heal()
	for i := range 10 {
		if code, body, _ := predict(2010 + i); code != 200 || !strings.Contains(body, `"model_used":true`) {
			t.Fatalf("healed: %d %s", code, body)
		}
	}
}
