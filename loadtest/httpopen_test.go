package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// echoServer answers each request with its body's length; bodies
// collects the bodies it saw.
func echoServer(t *testing.T, handler func(ctx *fasthttp.RequestCtx)) (url string, bodies func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		seen = append(seen, string(ctx.PostBody()))
		mu.Unlock()
		if handler != nil {
			handler(ctx)
			return
		}
		ctx.SetBodyString(strconv.Itoa(len(ctx.PostBody())))
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return "http://" + ln.Addr().String() + "/v1/x", func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

func seqBody(b []byte, seq int64) []byte { return strconv.AppendInt(b, seq, 10) }

func TestHTTPOpenLoopSendsEveryRequestOnSchedule(t *testing.T) {
	url, bodies := echoServer(t, nil)
	c, err := NewHTTPClient(HTTPTarget{URL: url, Header: "Content-Type: text/plain\r\n", Body: seqBody})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	r := c.OpenLoop(context.Background(), Options{Rate: 2000, Duration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond})
	took := time.Since(start)
	if r.FirstErr != nil || r.Errors != 0 {
		t.Fatalf("errors: %d, first %v", r.Errors, r.FirstErr)
	}
	// 1,200 due in 600 ms, of which the last 1,000 are recorded.
	if r.Sent != 1000 || r.OK != 1000 || r.Hist.TotalCount() != 1000 {
		t.Errorf("sent %d ok %d recorded %d, want 1000 each", r.Sent, r.OK, r.Hist.TotalCount())
	}
	if took < 590*time.Millisecond {
		t.Errorf("1,200 requests at 2,000/s took %s: not on schedule", took)
	}
	got := bodies()
	if len(got) != 1200 {
		t.Fatalf("server saw %d requests, want 1200", len(got))
	}
	seen := map[string]bool{}
	for _, b := range got {
		seen[b] = true
	}
	for i := range 1200 {
		if !seen[strconv.Itoa(i)] {
			t.Fatalf("request %d never reached the server", i)
		}
	}
	// The same client runs the next turn on the connections it kept.
	r = c.OpenLoop(context.Background(), Options{Rate: 1000, Duration: 100 * time.Millisecond, Warmup: 1})
	if r.OK != 100 || r.Errors != 0 {
		t.Errorf("second turn: ok %d err %d (%v)", r.OK, r.Errors, r.FirstErr)
	}
}

func TestHTTPOpenLoopLargeBodiesAndCheck(t *testing.T) {
	url, _ := echoServer(t, nil)
	big := []byte(strings.Repeat("x", 100_000))
	c, err := NewHTTPClient(HTTPTarget{URL: url, Body: func([]byte, int64) []byte { return big },
		Check: func(status int, body []byte) (int, error) {
			if status != 200 || string(body) != strconv.Itoa(len(big)) {
				return 0, fmt.Errorf("status %d body %q", status, body)
			}
			return 100, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := c.OpenLoop(context.Background(), Options{Rate: 500, Duration: 200 * time.Millisecond, Warmup: 1})
	if r.Errors != 0 || r.OK != 100 || r.Items != 100*100 {
		t.Errorf("ok %d items %d errors %d (%v)", r.OK, r.Items, r.Errors, r.FirstErr)
	}
}

func TestHTTPOpenLoopCountsFailures(t *testing.T) {
	url, _ := echoServer(t, func(ctx *fasthttp.RequestCtx) {
		if n, _ := strconv.Atoi(string(ctx.PostBody())); n%10 == 0 {
			ctx.Error("no", 503)
		}
	})
	c, err := NewHTTPClient(HTTPTarget{URL: url, Body: seqBody})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := c.OpenLoop(context.Background(), Options{Rate: 1000, Duration: 200 * time.Millisecond, Warmup: 1})
	if r.Errors != 20 || r.OK != 180 || r.FirstErr == nil || !strings.Contains(r.FirstErr.Error(), "status 503") {
		t.Errorf("ok %d errors %d, first %v; want 180, 20, status 503", r.OK, r.Errors, r.FirstErr)
	}
}

// A server that closes the connection after each answer, as one that
// says "Connection: close" or times idle connections out: every request
// still gets through, on new connections.
func TestHTTPOpenLoopServerClosingConnections(t *testing.T) {
	url, _ := echoServer(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetConnectionClose()
		ctx.SetBodyString("ok")
	})
	c, err := NewHTTPClient(HTTPTarget{URL: url, Body: seqBody})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := c.OpenLoop(context.Background(), Options{Rate: 500, Duration: 200 * time.Millisecond, Warmup: 1})
	if r.Errors != 0 || r.OK != 100 {
		t.Errorf("ok %d errors %d (%v)", r.OK, r.Errors, r.FirstErr)
	}
}

// A server that never answers: the run ends anyway, with the answers
// missing counted as errors once the connections fail.
func TestHTTPOpenLoopDeadServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			cn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				br := bufio.NewReader(cn)
				br.ReadString('\n') // read the request line, then hang up
				cn.Close()
			}()
		}
	}()
	defer ln.Close()
	// With one connection at most, the requests queued behind a dead one
	// go out on new ones.
	for _, maxConns := range []int{maxOut, 1} {
		c, err := NewHTTPClient(HTTPTarget{URL: "http://" + ln.Addr().String() + "/", Body: seqBody})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.maxConns = maxConns
		r := c.OpenLoop(context.Background(), Options{Rate: 200, Duration: 100 * time.Millisecond, Warmup: 1})
		if r.OK != 0 || r.Errors != r.Sent || r.Sent != 20 || r.FirstErr == nil {
			t.Errorf("%d connections: sent %d ok %d errors %d (%v); want every one failed", maxConns, r.Sent, r.OK, r.Errors, r.FirstErr)
		}
	}
}

func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		in     string
		status int
		body   string
		keep   bool
		err    string
	}{
		{in: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", status: 200, body: "hi", keep: true},
		{in: "HTTP/1.1 429 Too Many\r\ncontent-length: 0\r\nConnection: close\r\n\r\n", status: 429, keep: false},
		{in: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", status: 200, body: "x", keep: false},
		{in: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", status: 200, body: "x", keep: true},
		{in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", err: "Transfer-Encoding"},
		{in: "HTTP/1.1 200 OK\r\n\r\n", err: "without Content-Length"},
		{in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi", err: "EOF"},
		{in: "SSH-2.0\r\n", err: "bad status line"},
	} {
		status, body, keep, err := readResponse(bufio.NewReader(strings.NewReader(tc.in)), nil)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || status != tc.status || string(body) != tc.body || keep != tc.keep {
			t.Errorf("%q: %d %q %v %v; want %d %q %v", tc.in, status, body, keep, err, tc.status, tc.body, tc.keep)
		}
	}
}

// At maxConns connections, requests due wait for one to be free: the
// server never has more than that many at once, every request still goes
// out, and the wait counts in its latency.
func TestHTTPOpenLoopQueuesAtMaxConns(t *testing.T) {
	var now, most atomic.Int64
	url, _ := echoServer(t, func(ctx *fasthttp.RequestCtx) {
		n := now.Add(1)
		defer now.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		ctx.SetBodyString("ok")
	})
	c, err := NewHTTPClient(HTTPTarget{URL: url, Body: seqBody})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.maxConns = 2
	// 50 requests in 100 ms; two connections answer 100 a second.
	r := c.OpenLoop(context.Background(), Options{Rate: 500, Duration: 100 * time.Millisecond, Warmup: 1})
	if r.OK != 50 || r.Errors != 0 {
		t.Fatalf("ok %d errors %d (%v); want 50 answered", r.OK, r.Errors, r.FirstErr)
	}
	if most.Load() != 2 {
		t.Errorf("server had up to %d requests at once, want 2", most.Load())
	}
	// The last request was due at 98 ms and answered at ~500 ms.
	if r.Quantile(100) < 300*time.Millisecond {
		t.Errorf("max latency %s: the wait in the queue was not counted", r.Quantile(100))
	}
}
