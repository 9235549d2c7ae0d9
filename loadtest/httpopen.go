package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"
)

// HTTPTarget is what HTTPClient.OpenLoop sends: one kind of HTTP/1.1 request to
// one server, its body varying by sequence number.
type HTTPTarget struct {
	URL    string // http://host:port/path
	Method string // default POST
	// Header holds the extra header lines, each ending in "\r\n"
	// (Content-Type, Authorization...). Host and Content-Length are
	// written here.
	Header string
	// Body returns the body of request seq, appended to b or a slice of
	// its own; it is read before the next call.
	Body func(b []byte, seq int64) []byte
	// Check reads an answer: how many items the request carried, or why
	// it failed. Nil: any 2xx status carries one item.
	Check func(status int, body []byte) (items int, err error)
}

// HTTPClient runs open loops against one HTTPTarget over connections it
// keeps between runs.
//
// OpenLoop hands each request to a pool of sender goroutines; a sender
// blocks in its HTTP client until the answer is back. On this machine's
// VM a thread's sleep and wake-up costs ~15 µs of CPU, and that hand-off
// costs one or two per request on top of the network's: at 10k
// requests/s with a server answering nothing at all, the generator alone
// used 36 µs of CPU per request, a third of a core, which it takes from
// the server it measures. Here the scheduler writes each request itself,
// on an idle connection, as soon as it wakes at the request's due time,
// and one goroutine per connection reads the answers: a request costs the
// generator its timer's wake-up and its answer's.
//
// A connection carries one request at a time (no pipelining, so a slow
// answer never delays another's): when none is idle at a request's due
// time, the scheduler dials a new one, and the dial counts in that
// request's latency. At maxOut connections a request due waits in a
// queue, and the next connection that gets its answer writes it: as the
// sender pool of OpenLoop, it bounds what the server is asked to do at
// once, and the wait counts in the request's latency.
type HTTPClient struct {
	t        HTTPTarget
	addr     string
	prefix   []byte // request line, Host and t.Header, up to "Content-Length: "
	maxConns int

	mu      sync.Mutex
	idle    []*httpConn
	conns   map[*httpConn]struct{}
	dialing int      // dials under way (they count as connections)
	queue   []queued // requests due while every connection was busy, oldest first
	closed  bool
}

// maxOut is how many requests an open loop has out at once at most:
// OpenLoop's senders, HTTPClient's connections. Beyond, requests due wait
// (and the wait counts in their latency).
const maxOut = 512

// queued is a request waiting for a connection: its message, copied.
type queued struct {
	p    pending
	head []byte // with the body when small
	body []byte // a large body, or nil
}

// NewHTTPClient checks t and returns a client for it. Close it after use.
func NewHTTPClient(t HTTPTarget) (*HTTPClient, error) {
	u, err := url.Parse(t.URL)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("url: %q: want http://host:port/path", t.URL)
	}
	if t.Method == "" {
		t.Method = "POST"
	}
	if t.Body == nil {
		return nil, errors.New("body: required")
	}
	path := u.RequestURI()
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	prefix := fmt.Appendf(nil, "%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: ", t.Method, path, u.Host, t.Header)
	return &HTTPClient{t: t, addr: addr, prefix: prefix, maxConns: maxOut, conns: map[*httpConn]struct{}{}}, nil
}

// Close closes every connection.
func (c *HTTPClient) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for cn := range c.conns {
		cn.nc.Close()
	}
	c.idle = nil
}

// openTurn is one OpenLoop run's tally; answers arrive on the
// connections' readers.
type openTurn struct {
	mu      sync.Mutex
	res     *Result
	out     sync.WaitGroup // requests written, not yet answered
	expired bool           // the run returned: late answers are not counted
}

func (t *openTurn) done(p pending, items int, err error) {
	defer t.out.Done()
	if !p.record {
		return
	}
	lat := time.Since(p.due)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.expired {
		return
	}
	if err != nil {
		t.res.Errors++
		if t.res.FirstErr == nil {
			t.res.FirstErr = err
		}
		return
	}
	t.res.OK++
	t.res.Items += int64(items)
	_ = t.res.Hist.RecordValue(max(1, lat.Microseconds()))
}

// pending is the request a connection carries.
type pending struct {
	turn   *openTurn
	due    time.Time
	record bool
}

type httpConn struct {
	nc net.Conn

	mu   sync.Mutex
	p    pending // the request out, when busy
	busy bool
	dead bool // failed or closed: no new request may start on it
	// writeErr is why the request could not be written (the reader then
	// fails it with this rather than with the closed connection's error).
	writeErr error
}

// maxWait bounds how long an open loop waits for its last answers.
const maxWait = 30 * time.Second

// OpenLoop sends at opts.Rate for opts.Duration, as the package-level
// OpenLoop does, and records each latency from the request's due time.
func (c *HTTPClient) OpenLoop(ctx context.Context, opts Options) *Result {
	opts.EnsureDefaults()
	turn := &openTurn{res: &Result{Name: opts.Name, Rate: opts.Rate, Hist: newHist()}}
	res := turn.res
	var (
		req, body   []byte
		outstanding int
	)
	// The scheduler writes every request itself. It sleeps on a timerfd
	// when it can: sleeping with nanosleep (sleepUntil), its thread held a
	// P all along, and the server in this process had one core's worth of
	// Ps, not two (Go's /sched/latencies p99 164-655 µs against 2-49 µs
	// with the timerfd at 10k/s, bare handler p99 0.85-2.6 ms against
	// 0.47-0.64 ms).
	sleep := sleepUntil
	if ts, err := newTimerSleeper(); err == nil {
		defer ts.close()
		sleep = ts.until
	} else {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer lowTimerSlack()()
	}
	sched := newSchedule(opts)
	for seq, due := range sched.due(ctx, sleep) {
		record := sched.recorded(due)
		c.mu.Lock()
		outstanding = len(c.conns) + c.dialing - len(c.idle) + len(c.queue)
		c.mu.Unlock()
		if outstanding >= opts.MaxInFlight {
			// Never delay a send: count it.
			if record {
				res.Dropped++
			}
			continue
		}
		if record {
			res.Sent++
		}
		body = c.t.Body(body[:0], seq)
		req = append(append(req[:0], c.prefix...), strconv.Itoa(len(body))...)
		req = append(req, "\r\n\r\n"...)
		if len(body) <= smallBody {
			// One write; the buffer keeps its room for the next.
			req, body = append(req, body...), nil
		}
		turn.out.Add(1)
		c.send(turn, pending{turn: turn, due: due, record: record}, req, body)
	}
	waited := make(chan struct{})
	go func() { turn.out.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(maxWait):
		turn.mu.Lock()
		turn.expired = true
		if res.FirstErr == nil {
			res.FirstErr = fmt.Errorf("answers still missing %s after the last send", maxWait)
		}
		turn.mu.Unlock()
	}
	turn.mu.Lock()
	res.Duration = time.Since(sched.measureFrom)
	turn.mu.Unlock()
	return res
}

// send writes one request on an idle connection, dialing one when none is
// and fewer than maxConns are open; else it queues a copy.
func (c *HTTPClient) send(turn *openTurn, p pending, head, body []byte) {
	for {
		c.mu.Lock()
		if n := len(c.idle); n > 0 {
			cn := c.idle[n-1]
			c.idle = c.idle[:n-1]
			c.mu.Unlock()
			if cn.start(p) {
				cn.write(head, body)
				return
			}
			continue // the server closed it while it was idle
		}
		if len(c.conns)+c.dialing >= c.maxConns {
			// Copied: the scheduler reuses its buffers, and Body may
			// have appended to one.
			c.queue = append(c.queue, queued{p: p, head: slices.Clone(head), body: slices.Clone(body)})
			c.mu.Unlock()
			return
		}
		c.dialing++
		c.mu.Unlock()
		c.dialAndWrite(queued{p: p, head: head, body: body})
		return
	}
}

// dialAndWrite opens a connection for q and writes it there. It reports
// whether it could.
func (c *HTTPClient) dialAndWrite(q queued) bool {
	nc, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	c.mu.Lock()
	c.dialing--
	if err != nil {
		c.mu.Unlock()
		q.p.turn.done(q.p, 0, err)
		return false
	}
	cn := &httpConn{nc: nc}
	c.conns[cn] = struct{}{}
	c.mu.Unlock()
	cn.start(q.p)
	go c.read(cn)
	cn.write(q.head, q.body)
	return true
}

// smallBody is the size up to which a body is copied after the head and
// sent in one write; a larger one goes in a writev with the head.
const smallBody = 4096

// start makes p the request cn carries, unless cn is dead.
func (cn *httpConn) start(p pending) bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.dead {
		return false
	}
	cn.p, cn.busy = p, true
	return true
}

// write sends a request started on cn, head then body (nil when head holds
// it); when it fails, cn's reader fails the request.
func (cn *httpConn) write(head, body []byte) {
	var err error
	if len(body) == 0 {
		_, err = cn.nc.Write(head)
	} else {
		bufs := net.Buffers{head, body}
		_, err = bufs.WriteTo(cn.nc)
	}
	if err != nil {
		cn.mu.Lock()
		cn.writeErr = err
		cn.mu.Unlock()
		cn.nc.Close()
	}
}

// read reads cn's answers until it fails or the server closes it. After
// an answer it writes the oldest queued request, if any, else leaves cn
// idle.
func (c *HTTPClient) read(cn *httpConn) {
	br := bufio.NewReaderSize(cn.nc, 64<<10)
	var buf []byte
	for {
		status, body, keep, err := readResponse(br, buf[:0])
		buf = body
		cn.mu.Lock()
		p, busy := cn.p, cn.busy
		cn.busy = false
		if err != nil || !keep {
			if err != nil && cn.writeErr != nil {
				err = cn.writeErr
			}
			// No request may start on it from now on.
			cn.dead = true
		}
		cn.mu.Unlock()
		if !busy {
			break // closed while idle, or an answer to nothing
		}
		if err != nil {
			p.turn.done(p, 0, err)
			break
		}
		items, cerr := c.check(status, body)
		if keep {
			// Busy again, or idle, before the tally, so that the next
			// request due finds it.
			c.mu.Lock()
			if len(c.queue) > 0 {
				q := c.popQueue()
				c.mu.Unlock()
				cn.start(q.p)
				cn.write(q.head, q.body)
			} else {
				c.idle = append(c.idle, cn)
				c.mu.Unlock()
			}
		}
		p.turn.done(p, items, cerr)
		if !keep {
			break
		}
	}
	cn.nc.Close()
	c.mu.Lock()
	delete(c.conns, cn)
	c.idle = deleteConn(c.idle, cn)
	// The queue waits on a connection that is gone: open another for its
	// oldest request (and, if that fails, for the next).
	for len(c.queue) > 0 {
		q := c.popQueue()
		if c.closed {
			c.mu.Unlock()
			q.p.turn.done(q.p, 0, errors.New("client closed"))
			c.mu.Lock()
			continue
		}
		c.dialing++
		c.mu.Unlock()
		ok := c.dialAndWrite(q)
		c.mu.Lock()
		if ok {
			break
		}
	}
	c.mu.Unlock()
}

// popQueue takes the oldest queued request; c.mu is held.
func (c *HTTPClient) popQueue() queued {
	q := c.queue[0]
	c.queue[0] = queued{}
	c.queue = c.queue[1:]
	if len(c.queue) == 0 {
		c.queue = nil
	}
	return q
}

func deleteConn(idle []*httpConn, cn *httpConn) []*httpConn {
	for i, x := range idle {
		if x == cn {
			return append(idle[:i], idle[i+1:]...)
		}
	}
	return idle
}

func (c *HTTPClient) check(status int, body []byte) (int, error) {
	if c.t.Check != nil {
		return c.t.Check(status, body)
	}
	if status < 200 || status > 299 {
		return 0, fmt.Errorf("status %d: %.200s", status, body)
	}
	return 1, nil
}

// readResponse reads one HTTP/1.1 answer from br: its status, its body
// appended to buf, and whether the connection stays open. Bodies must
// come with a Content-Length (Pulse's servers and the bare handler always
// send one).
func readResponse(br *bufio.Reader, buf []byte) (status int, body []byte, keep bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, buf, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, buf, false, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, buf, false, fmt.Errorf("bad status line %q", line)
	}
	keep = line[7] == '1' // HTTP/1.1 keeps the connection unless told
	length := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return status, buf, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return status, buf, false, fmt.Errorf("bad header line %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			length, err = strconv.Atoi(string(value))
			if err != nil || length < 0 {
				return status, buf, false, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Connection")):
			switch {
			case bytes.EqualFold(value, []byte("close")):
				keep = false
			case bytes.EqualFold(value, []byte("keep-alive")):
				keep = true
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return status, buf, false, fmt.Errorf("Transfer-Encoding %q is not supported (want Content-Length)", value)
		}
	}
	if length < 0 {
		return status, buf, false, errors.New("answer without Content-Length")
	}
	n := len(buf)
	buf = slices.Grow(buf, length)[:n+length]
	if _, err := io.ReadFull(br, buf[n:]); err != nil {
		return status, buf[:n], false, err
	}
	return status, buf, keep, nil
}
