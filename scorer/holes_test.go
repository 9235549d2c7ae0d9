package scorer_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/internal/httpapi"
)

// TestPredictChecksTheKeyFirst: an unauthenticated predict is answered
// 401 before its body is parsed: a body that would not parse gets 401.
func TestPredictChecksTheKeyFirst(t *testing.T) {
	h := start(t, newConfig(t, testConfig), newMemStore())
	f := func(key, body string, wantCode int, wantErr string) {
		t.Helper()
		code, got := h.do("POST", "/v1/predict", key, body)
		if code != wantCode || !strings.Contains(got, wantErr) {
			t.Errorf("%q %s: %d %s, want %d %q", key, body, code, got, wantCode, wantErr)
		}
	}
	f("", `{"model":"purchase_propensity","features":[`, 401, "missing API key")
	f("", `{"api_key":"nope","model":"purchase_propensity","features":[`, 401, "unknown API key")
	f("nope", `{"features":[{"user":{"id":1,"x":"NaN"}}]}`, 401, "unknown API key")
	f("write-key", `{"features":[`, 403, "needs read")
	// A known caller hears what is wrong.
	f("", `{"api_key":"read-key","model":"purchase_propensity","features":[`, 400, "unexpected end of body")
	f("read-key", `{"model":"purchase_propensity","features":[{"user":{"id":1,"x":"NaN"}}]}`, 400, `features[0].user.x: want a number, got the string \"NaN\"`)
	f("read-key", `{"model":"purchase_propensity","features":[{"user":{"id":1,"cart_adds_24h":"Inf"}}]}`, 400, `features[0].user.cart_adds_24h: want a number, got the string \"Inf\"`)
	f("read-key", `{"model":"purchase_propensity","features":[{"user":{"id":1,"cart_adds_24h":1e999}}]}`, 400, `features[0].user.cart_adds_24h: want a finite number, got 1e999`)

	// Guessing keys is limited per client, here every test's 127.0.0.1.
	for range httpapi.FailureBurst {
		h.do("POST", "/v1/predict", "guess", `{}`)
	}
	if code, got := h.do("GET", "/v1/segments", "read-key", ""); code != 429 || !strings.Contains(got, "too many failed authentications") {
		t.Fatalf("after %d more guesses: %d %s", httpapi.FailureBurst, code, got)
	}
}

// TestPredictNumericIDs: a numeric id finds what ingest stored for it.
func TestPredictNumericIDs(t *testing.T) {
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"9007199254740993": buyer(), "1500": buyer()}, nil)
	h := start(t, newConfig(t, testConfig), st)
	code, body := h.do("POST", "/v1/predict", "read-key", `{"model":"purchase_propensity","features":[{"user":{"id":9007199254740993}},{"user":{"id":9007199254740992}},{"user":{"id":1.5e3}}]}`)
	if code != 200 || strings.Count(body, `"model_used":true`) != 2 || !strings.Contains(body, `user \"9007199254740992\" not found`) {
		t.Fatalf("%d %s", code, body)
	}
}

// TestLongURLs: every id ingest accepts can be read back, and a longer URL
// is answered 414.
func TestLongURLs(t *testing.T) {
	h := start(t, newConfig(t, testConfig), newMemStore())
	longest := strings.Repeat("é", event.MaxIDLen/2) // each byte escaped: %C3%A9
	code, body := h.do("GET", "/v1/entities/user/"+url.PathEscape(longest)+"?api_key=read-key", "", "")
	if code != 404 || !strings.Contains(body, longest) {
		t.Fatalf("the longest id: %d %s", code, body)
	}
	code, body = h.do("GET", "/v1/entities/user/"+strings.Repeat("x", httpapi.DefaultMaxURLBytes), "read-key", "")
	if code != 414 || !strings.Contains(body, "over the 2048 byte limit") {
		t.Fatalf("a long URL: %d %s", code, body)
	}
}
