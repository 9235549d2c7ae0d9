package scorer_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/valyala/fasthttp"
)

func TestEntity(t *testing.T) {
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"612": buyer()}, map[string][]string{"612": {"big_spenders", "carts"}})
	h := start(t, newConfig(t, testConfig), st)

	code, body := h.do("GET", "/v1/entities/user/612", "read-key", "")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	var e scorer.Entity
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatal(err)
	}
	if e.Entity != "user" || e.ID != "612" || e.Features["revenue_30d"] != 640.0 || e.Features["country"] != "FR" ||
		strings.Join(e.Segments, ",") != "big_spenders,carts" || e.UpdatedAt.IsZero() {
		t.Errorf("got %s", body)
	}
	if code, _ := h.do("GET", "/v1/entities/user/612?api_key=read-key", "", ""); code != 200 {
		t.Errorf("api_key query: %d", code)
	}
	r, _ := http.NewRequest("GET", h.url+"/v1/entities/user/612", nil)
	r.SetBasicAuth("read-key", "")
	if resp, err := http.DefaultClient.Do(r); err != nil || resp.StatusCode != 200 {
		t.Errorf("basic auth: %v %v", resp, err)
	}

	f := func(path, key string, wantCode int, wantErr string) {
		t.Helper()
		code, body := h.do("GET", path, key, "")
		if code != wantCode || !strings.Contains(body, wantErr) {
			t.Errorf("GET %s: got %d %s, want %d with %q", path, code, body, wantCode, wantErr)
		}
	}
	f("/v1/entities/user/613", "read-key", 404, `user \"613\" not found`)
	f("/v1/entities/account/1", "read-key", 404, `unknown entity type \"account\"`)
	f("/v1/entities/user", "read-key", 404, "use /v1/entities/{entity}/{id}")
	f("/v1/entities/user/612", "", 401, "missing API key")
	f("/v1/entities/user/612", "write-key", 403, "needs read")
	f("/v1/nothing", "read-key", 404, "no such endpoint")
}

func TestSegments(t *testing.T) {
	st := newMemStore()
	users := map[string]map[string]any{}
	segs := map[string][]string{}
	for i := range 250 {
		id := fmt.Sprintf("u%03d", i)
		users[id] = buyer()
		segs[id] = []string{"big_spenders"}
	}
	seed(t, st, users, segs)
	h := start(t, newConfig(t, testConfig), st)

	code, body := h.do("GET", "/v1/segments", "read-key", "")
	var list struct{ Segments []scorer.Segment }
	if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil {
		t.Fatalf("%d %s %v", code, body, err)
	}
	want := []scorer.Segment{
		{Name: "big_spenders", Description: "Spent over $500 in 30 days", Entity: "user", Rule: "revenue_30d > 500", Members: 250},
		{Name: "carts", Entity: "user", Rule: "cart_adds_24h > 0", Members: 0},
	}
	if fmt.Sprint(list.Segments) != fmt.Sprint(want) {
		t.Errorf("segments: got %+v, want %+v", list.Segments, want)
	}
	code, body = h.do("GET", "/v1/segments/big_spenders", "read-key", "")
	if code != 200 || !strings.Contains(body, `"members":250`) {
		t.Errorf("one segment: %d %s", code, body)
	}

	// Page through with the default limit, then with limit=100 explicitly.
	for _, q := range []string{"", "&limit=100", "&limit=7"} {
		var all []string
		cursor := ""
		pages := 0
		for {
			code, body := h.do("GET", "/v1/segments/big_spenders/members?cursor="+cursor+q, "read-key", "")
			var page scorer.Members
			if err := json.Unmarshal([]byte(body), &page); code != 200 || err != nil {
				t.Fatalf("%d %s %v", code, body, err)
			}
			all = append(all, page.Members...)
			pages++
			if page.NextCursor == "" {
				break
			}
			cursor = page.NextCursor
		}
		if len(all) != 250 || all[0] != "u000" || all[249] != "u249" {
			t.Errorf("limit %q: paged %d members (%v..)", q, len(all), all[:min(3, len(all))])
		}
		if q == "" && pages != 3 {
			t.Errorf("default limit: %d pages for 250 members, want 3", pages)
		}
	}
	code, body = h.do("GET", "/v1/segments/big_spenders/members?limit=5000", "read-key", "")
	var page scorer.Members
	json.Unmarshal([]byte(body), &page)
	if code != 200 || len(page.Members) != 250 {
		t.Errorf("limit over 1000 is capped: %d, %d members", code, len(page.Members))
	}

	f := func(path string, wantCode int, wantErr string) {
		t.Helper()
		code, body := h.do("GET", path, "read-key", "")
		if code != wantCode || !strings.Contains(body, wantErr) {
			t.Errorf("GET %s: got %d %s, want %d with %q", path, code, body, wantCode, wantErr)
		}
	}
	f("/v1/segments/nope", 404, `unknown segment \"nope\"`)
	f("/v1/segments/nope/members", 404, `unknown segment \"nope\"`)
	f("/v1/segments/big_spenders/members?limit=0", 400, "limit: want a whole number")
	f("/v1/segments/big_spenders/members?limit=x", 400, "limit: want a whole number")
	f("/v1/segments/big_spenders/other", 404, "no such endpoint")
	f("/v1/segments/live", 503, "live segment feed is not running")
	if code, _ := h.do("GET", "/v1/segments", "", ""); code != 401 {
		t.Errorf("segments without a key: %d", code)
	}
}

type fakeLive struct{}

func (fakeLive) ServeSSE(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/event-stream")
	ctx.SetBodyString("data: hello\n\n")
}

func TestLiveHandler(t *testing.T) {
	h := start(t, newConfig(t, testConfig), newMemStore(), scorer.WithLive(fakeLive{}))
	code, body := h.do("GET", "/v1/segments/live?api_key=read-key", "", "")
	if code != 200 || body != "data: hello\n\n" {
		t.Errorf("got %d %q", code, body)
	}
	if code, _ := h.do("GET", "/v1/segments/live", "", ""); code != 401 {
		t.Errorf("without a key: %d", code)
	}
}

func TestDashboard(t *testing.T) {
	h := start(t, newConfig(t, testConfig), newMemStore())
	resp, err := http.Get(h.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || resp.Header.Get("ETag") == "" {
		t.Errorf("/: %d %v", resp.StatusCode, resp.Header)
	}
	req, _ := http.NewRequest("GET", h.url+"/index.html", nil)
	req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
	if r2, err := http.DefaultClient.Do(req); err != nil || r2.StatusCode != 304 {
		t.Errorf("If-None-Match: %v %v", r2, err)
	}
	if code, body := h.do("GET", "/config.js", "", ""); code != 200 || body != `window.PULSE_CONFIG = {"models":["purchase_propensity","spend"]};`+"\n" {
		t.Errorf("config.js without dev key: %d %q", code, body)
	}
	if code, _ := h.do("GET", "/nope.css", "", ""); code != 404 {
		t.Errorf("missing asset: %d", code)
	}
	if code, _ := h.do("POST", "/", "", "x"); code != 405 {
		t.Errorf("POST /: %d", code)
	}
	for _, p := range []string{"/healthz", "/metrics"} {
		if code, _ := h.do("GET", p, "", ""); code != 200 {
			t.Errorf("%s: %d", p, code)
		}
	}

	dev := start(t, newConfig(t, testConfig), newMemStore(), scorer.WithDashboardKey("read-key"))
	// Never in a script another site can include.
	if _, body := dev.do("GET", "/config.js", "", ""); body != `window.PULSE_CONFIG = {"models":["purchase_propensity","spend"]};`+"\n" {
		t.Errorf("config.js in dev: %q", body)
	}
	checkDashboardKey(t, dev.url, "read-key")
}

// checkDashboardKey: GET /v1/dashboard/config hands key only to a
// same-origin fetch from a page on a loopback host.
func checkDashboardKey(t *testing.T, base, key string) {
	t.Helper()
	get := func(hdr map[string]string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/v1/dashboard/config", nil)
		for k, v := range hdr {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("dashboard config headers: %v", resp.Header)
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	same := map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Dest": "empty", "Sec-Fetch-Mode": "cors"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range same {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	withKey := `{"readKey":"` + key + `","models":["purchase_propensity","spend"]}`
	noKey := `{"models":["purchase_propensity","spend"]}`
	port := base[strings.LastIndex(base, ":")+1:]
	for _, c := range []struct {
		name string
		hdr  map[string]string
		want string
	}{
		{"the dashboard's fetch", same, withKey},
		{"from localhost", with(map[string]string{"Host": "localhost:" + port, "Origin": "http://localhost:" + port}), withKey},
		{"no fetch metadata (curl, an old browser)", nil, noKey},
		{"another site's fetch", with(map[string]string{"Sec-Fetch-Site": "cross-site"}), noKey},
		{"another site's script tag", with(map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "script", "Sec-Fetch-Mode": "no-cors"}), noKey},
		{"a same-origin script tag", with(map[string]string{"Sec-Fetch-Dest": "script"}), noKey},
		{"a DNS name rebound to 127.0.0.1", with(map[string]string{"Host": "evil.example:" + port}), noKey},
		{"another origin", with(map[string]string{"Origin": "http://evil.example"}), noKey},
	} {
		if got := get(c.hdr); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestDashboardKeyRules(t *testing.T) {
	cfg := newConfig(t, testConfig)
	for _, key := range []string{"admin-key", "write-key", "not-configured"} {
		if _, err := scorer.New(cfg, newMemStore(), scorer.WithDashboardKey(key)); err == nil {
			t.Errorf("a dashboard key %q was taken", key)
		}
	}
	// Listening beyond loopback, the scorer never hands the key out.
	srv, err := scorer.New(cfg, newMemStore(), scorer.WithDashboardKey("read-key"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	port := ln.Addr().(*net.TCPAddr).Port
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/v1/dashboard/config", port), nil)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Sec-Fetch-Dest", "empty")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); strings.Contains(string(b), "read-key") {
		t.Fatalf("a scorer on %s handed out the dashboard key: %s", ln.Addr(), b)
	}
}
