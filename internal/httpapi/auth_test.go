package httpapi

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

var testKeys = []config.APIKey{
	{Name: "w", Key: "write-key", Scopes: []string{config.ScopeWrite}},
	{Name: "r", Key: "read-key", Scopes: []string{config.ScopeRead}},
	{Name: "r2", Key: "read-key-2", Scopes: []string{config.ScopeRead}},
}

func TestKeysLookUpEveryKey(t *testing.T) {
	k := NewKeys(testKeys)
	f := func(secret, scope, wantName string, wantErr error) {
		t.Helper()
		key, _, err := k.Check(secret, scope)
		if wantErr != nil {
			if err == nil || !strings.HasPrefix(err.Error(), wantErr.Error()) {
				t.Fatalf("Check(%q, %s) = %v, want %v", secret, scope, err, wantErr)
			}
			return
		}
		if err != nil || key.Name != wantName {
			t.Fatalf("Check(%q, %s) = %v %v, want %s", secret, scope, key, err, wantName)
		}
	}
	f("write-key", config.ScopeWrite, "w", nil)
	f("read-key", config.ScopeRead, "r", nil)
	f("read-key-2", config.ScopeRead, "r2", nil)
	f("read-key", config.ScopeWrite, "", ErrScope)
	f("read-ke", config.ScopeRead, "", ErrUnknownKey)
	f("read-key-22", config.ScopeRead, "", ErrUnknownKey)
	f("", config.ScopeRead, "", ErrNoKey)
}

// request is a request from addr with key as a Bearer token.
func request(addr, key string) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	var req fasthttp.Request
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	ip, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(ip), Port: p}, nil)
	return &ctx
}

func TestAuthLimitsFailuresPerClient(t *testing.T) {
	a := NewAuth(testKeys)
	clock := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	a.SetClock(func() time.Time { return clock })
	try := func(addr, key string) (int, string) {
		ctx := request(addr, key)
		a.Authorize(ctx, KeyFromHeaders(ctx), config.ScopeRead)
		if ctx.Response.StatusCode() == 0 {
			return 200, ""
		}
		return ctx.Response.StatusCode(), string(ctx.Response.Header.Peek("Retry-After"))
	}
	for i := range FailureBurst {
		if code, _ := try("10.0.0.1:5000", "guess-"+strconv.Itoa(i)); code != 401 {
			t.Fatalf("guess %d: %d, want 401", i, code)
		}
	}
	// The budget is spent: a guess, and then even the right key, wait.
	code, retry := try("10.0.0.1:5001", "guess")
	if code != 429 || retry != "3" {
		t.Fatalf("over the failure budget: %d Retry-After %q, want 429 3", code, retry)
	}
	if code, _ := try("10.0.0.1:5002", "read-key"); code != 429 {
		t.Fatalf("the right key while blocked: %d, want 429", code)
	}
	// Other clients are not held back; a wrong scope is not a failure.
	if code, _ := try("10.0.0.2:5000", "read-key"); code != 200 {
		t.Fatalf("another client: %d", code)
	}
	for range FailureBurst + 5 {
		if code, _ := try("10.0.0.3:5000", "write-key"); code != 403 {
			t.Fatalf("wrong scope: %d, want 403", code)
		}
	}
	// One IPv6 /64 is one client.
	for i := range FailureBurst {
		try("[2001:db8::"+strconv.Itoa(i+1)+"]:5000", "guess")
	}
	if code, _ := try("[2001:db8::ffff]:5000", "read-key"); code != 429 {
		t.Fatalf("the same /64: %d, want 429", code)
	}
	// A failure comes back every FailureEvery.
	clock = clock.Add(FailureEvery)
	if code, _ := try("10.0.0.1:5003", "read-key"); code != 200 {
		t.Fatalf("after %s: %d, want 200", FailureEvery, code)
	}
	// Reloading keys keeps the count.
	a.Reload(testKeys)
	try("10.0.0.1:5003", "guess")
	if code, _ := try("10.0.0.1:5003", "read-key"); code != 429 {
		t.Fatalf("after a reload: %d, want 429", code)
	}
}

func TestFailuresForgetWhenFull(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	f := newFailures(2, time.Second, func() time.Time { return now })
	for i := range maxClients + 10 {
		f.fail("c" + strconv.Itoa(i))
	}
	if n := f.count.Load(); n > maxClients {
		t.Fatalf("%d clients tracked, over %d", n, maxClients)
	}
}

func TestServerURLLimits(t *testing.T) {
	ln := fasthttputil.NewInmemoryListener()
	defer ln.Close()
	srv := NewServer(ServerOptions{Name: "t", Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }})
	go srv.Serve(ln)
	defer srv.Shutdown()
	c := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }, ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}
	get := func(path string) (int, string) {
		t.Helper()
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://pulse" + path)
		if err := c.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode(), string(resp.Body())
	}
	at := "/v1/entities/user/" + strings.Repeat("%C3%A9", (DefaultMaxURLBytes-len("/v1/entities/user/"))/6)
	if code, body := get(at); code != 200 {
		t.Fatalf("a URL within the limit: %d %s", code, body)
	}
	if code, body := get(at + "%C3%A9"); code != 414 || !strings.Contains(body, "over the 2048 byte limit") {
		t.Fatalf("a URL over the limit: %d %s", code, body)
	}
	if code, body := get("/" + strings.Repeat("x", readBufferSize)); code != 431 || !strings.Contains(body, `"success":false`) {
		t.Fatalf("a request line over the read buffer: %d %s", code, body)
	}
}
