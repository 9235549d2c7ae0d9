package scorer_test

import (
	"bufio"
	"context"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/scorer"
	"github.com/valyala/fasthttp"
)

// TestLiveReleasesLeavingClients: streams whose clients left end at once,
// not at the next heartbeat (an hour here): many clients connect and
// leave, and the goroutines return to what they were.
func TestLiveReleasesLeavingClients(t *testing.T) {
	e := newLiveEnv(t)
	live := scorer.NewLive(e.cfg, scorer.LiveOptions{Heartbeat: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- live.Run(ctx) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Idle workers go at once, so that only the streams could stay.
	srv := &fasthttp.Server{Handler: live.ServeSSE, MaxIdleWorkerDuration: 50 * time.Millisecond}
	go srv.Serve(ln)
	// Live first: its end ends the streams the server's shutdown waits for.
	defer srv.Shutdown()
	defer func() { cancel(); <-runDone }()
	for deadline := time.Now().Add(10 * time.Second); !live.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("live feed not ready after 10s")
		}
	}
	e.send(4, false)

	settle := func(max int, within time.Duration) int {
		deadline := time.Now().Add(within)
		for {
			n := runtime.NumGoroutine()
			if n <= max || time.Now().After(deadline) {
				return n
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// A client that comes and goes once, so the baseline holds the
	// server's own goroutines.
	open := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		c.Write([]byte("GET /?api_key=rk HTTP/1.1\r\nHost: pulse\r\n\r\n"))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the stream's start: %v", err)
			}
			if strings.HasPrefix(line, ": pulse live segments") {
				return c
			}
		}
	}
	open().Close()
	time.Sleep(200 * time.Millisecond)
	baseline := settle(0, time.Second)

	const clients = 300
	conns := make([]net.Conn, clients)
	for i := range conns {
		conns[i] = open()
	}
	if n := runtime.NumGoroutine(); n < baseline+clients {
		t.Fatalf("%d goroutines with %d streams open, baseline %d: the test does not see the streams", n, clients, baseline)
	}
	for _, c := range conns {
		c.Close()
	}
	if n := settle(baseline+10, 30*time.Second); n > baseline+10 {
		t.Fatalf("%d goroutines 30s after %d clients left, baseline %d: the streams wait for their heartbeat", n, clients, baseline)
	}
}
