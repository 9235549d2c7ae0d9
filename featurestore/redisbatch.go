package featurestore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"
)

// mgetBatcher is the Redis read path: it coalesces the vector reads of
// concurrent callers into one MGET per round trip (what rueidis calls
// auto-pipelining; go-redis has no such mode). A scorer under load asks
// for many vectors at once, each in its own request: one MGET for all of
// them costs Redis and this process one read and one write system call
// instead of one each per request, so the saturation throughput is the
// batch's, not a round trip's.
//
// The callers do the work themselves. While fewer than maxInflight MGETs
// are out, a caller sends its own at once: at low load a read is exactly
// one MGET on the caller's goroutine, with no hand-off. Beyond that,
// callers queue; when an MGET comes back, its sender hands everything
// queued (up to maxKeys keys) to the first queued caller, which sends it
// as one MGET and answers the others.
//
// Each of the maxInflight slots owns one connection, spoken to directly in
// RESP2 rather than through go-redis, which serves the store's other
// commands: this one command with one reply shape is the scorer's hot path,
// and go-redis costs per command a pool checkout with a liveness probe
// (one more system call), deadline updates, hooks, a command object, the
// keys as a []any and the answer as []any of strings. Here the keys are
// written from the entity and ids into a reused buffer and each vector is
// read straight into its caller's buffer: no allocation per read.
type mgetBatcher struct {
	addr     string
	password string
	db       int
	prefix   string // key prefix: a vector's key is prefix "v:" entity ":" id
	timeout  time.Duration

	maxInflight int
	maxKeys     int

	mu       sync.Mutex
	pending  []*mgetCall
	inflight int         // MGETs out (slots taken)
	idle     []*mgetConn // the connections of the free slots; nil: to dial
	conns    []*mgetConn // every open connection, to close them on close
	closed   bool

	calls sync.Pool
}

type callState uint8

const (
	callPending callState = iota // queued, may still leave the queue
	callMember                   // in a batch on its way
	callLeader                   // handed a batch to send (itself first)
)

// mgetCall is one caller's read: the vectors of ids, appended to buf, and
// raw[i] the encoding of ids[i] within buf (nil: no such key).
type mgetCall struct {
	entity string
	ids    []string
	buf    []byte
	raw    [][]byte
	// len(buf) and len(raw) before the MGET: a read cut short is undone
	bufMark, rawMark int
	err              error
	state            callState   // under mgetBatcher.mu
	batch            []*mgetCall // set with callLeader
	done             chan struct{}
}

// On two shared cores, one, two and four MGETs out at most cost the same
// CPU per read within the noise under `pulse loadtest predict`; earlier
// latency runs favoured two (docs/BENCHMARKS.md).
const (
	mgetMaxInflight = 2   // MGETs out at once at most, by default (RedisOptions.ReadSlots)
	mgetMaxKeys     = 512 // keys per MGET at most (a caller's own keys are never split)
)

func newMgetBatcher(addr, password string, db int, prefix string, timeout time.Duration, slots int) *mgetBatcher {
	if slots <= 0 {
		slots = mgetMaxInflight
	}
	b := &mgetBatcher{
		addr: addr, password: password, db: db, prefix: prefix, timeout: timeout,
		maxInflight: slots, maxKeys: mgetMaxKeys,
	}
	b.idle = make([]*mgetConn, b.maxInflight)
	b.calls.New = func() any { return &mgetCall{done: make(chan struct{}, 1)} }
	return b
}

// warm dials every slot's connection, so that the first reads do not pay
// a dial, and so that a server that refuses them (a wrong password) is
// known at open.
func (b *mgetBatcher) warm(ctx context.Context) error {
	for i := range b.idle {
		cn, err := b.dial(ctx)
		if err != nil {
			return err
		}
		b.idle[i] = cn
	}
	return nil
}

// read appends the encoded vectors of ids to buf as AppendRaw does.
func (b *mgetBatcher) read(ctx context.Context, entity string, ids []string, buf []byte, raw [][]byte) ([]byte, [][]byte, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return buf, raw, ErrClosed
	}
	if b.inflight < b.maxInflight {
		// Nothing is queued while an MGET slot is free: send alone, on the
		// caller's context.
		b.inflight++
		cn := b.idle[len(b.idle)-1]
		b.idle = b.idle[:len(b.idle)-1]
		b.mu.Unlock()
		call := mgetCall{entity: entity, ids: ids, buf: buf, raw: raw}
		batch := [1]*mgetCall{&call}
		cn = b.exchange(ctx, cn, batch[:])
		b.next(cn)
		return call.buf, call.raw, call.err
	}
	call := b.calls.Get().(*mgetCall)
	call.entity, call.ids, call.buf, call.raw = entity, ids, buf, raw
	call.err, call.state, call.batch = nil, callPending, call.batch[:0]
	b.pending = append(b.pending, call)
	b.mu.Unlock()

	select {
	case <-call.done:
	case <-ctx.Done():
		b.mu.Lock()
		switch call.state {
		case callPending:
			b.pending = removeCall(b.pending, call)
		case callLeader:
			// The batch is ours to send: send it for the others. Our
			// buffers are the caller's again as soon as we return: read
			// our vectors into fresh ones.
			batch := call.batch
			call.buf, call.raw = nil, nil
			go func() {
				<-call.done
				b.send(batch)
			}()
		case callMember:
			// The batch's leader appends to our buffers until it answers,
			// after we return: the caller gets them back with no room to
			// grow in place, so that its next appends go elsewhere. The
			// call is left to the GC.
			buf, raw = buf[:len(buf):len(buf)], raw[:len(raw):len(raw)]
		}
		b.mu.Unlock()
		return buf, raw, ctx.Err()
	}
	if call.state == callLeader {
		b.send(call.batch)
	}
	buf, raw, err := call.buf, call.raw, call.err
	// The batch's memory stays with the call for its next turn as a leader.
	clear(call.batch)
	call.entity, call.ids, call.buf, call.raw, call.err, call.batch = "", nil, nil, nil, nil, call.batch[:0]
	b.calls.Put(call)
	return buf, raw, err
}

// send sends one MGET for batch (its leader first), answers the others,
// and passes the slot on. It runs with a slot taken by next.
func (b *mgetBatcher) send(batch []*mgetCall) {
	b.mu.Lock()
	cn := b.idle[len(b.idle)-1]
	b.idle = b.idle[:len(b.idle)-1]
	b.mu.Unlock()
	// Several callers' reads: bounded by the timeout, not by one caller's
	// context.
	cn = b.exchange(context.Background(), cn, batch)
	for _, c := range batch[1:] {
		c.done <- struct{}{}
	}
	b.next(cn)
}

// exchange sends batch's MGET on cn (dialing when cn is nil) and reads the
// answers into the calls, or sets their err. A read that fails on a
// connection that had served before is tried once more on a new one: the
// server may have closed it (restarted, idle timeout). It returns the
// connection to keep for the slot, nil when it was closed.
func (b *mgetBatcher) exchange(ctx context.Context, cn *mgetConn, batch []*mgetCall) *mgetConn {
	keys := 0
	for _, c := range batch {
		keys += len(c.ids)
		c.bufMark, c.rawMark = len(c.buf), len(c.raw)
	}
	for try := 0; ; try++ {
		if err := ctx.Err(); err != nil {
			b.fail(batch, err)
			return cn
		}
		fresh := cn == nil
		var err error
		if fresh {
			if cn, err = b.dial(ctx); err != nil {
				b.fail(batch, err)
				return nil
			}
		}
		err = cn.mget(ctx, b, batch, keys)
		if err == nil {
			return cn
		}
		var re redisError
		if errors.As(err, &re) {
			// The server answered with an error, in full: the connection
			// is in step.
			b.fail(batch, err)
			return cn
		}
		cn.close(b)
		cn = nil
		for _, c := range batch {
			// Undo what a read cut short appended.
			c.buf, c.raw = c.buf[:c.bufMark], c.raw[:c.rawMark]
		}
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout()
		if fresh || try > 0 || timeout || ctx.Err() != nil || b.isClosed() {
			switch {
			case b.isClosed():
				err = ErrClosed
			case ctx.Err() != nil:
				err = ctx.Err()
			case timeout && pastDeadline(ctx):
				// The connection's deadline was the context's, and its
				// timer went off before the context's own.
				err = context.DeadlineExceeded
			}
			b.fail(batch, err)
			return nil
		}
	}
}

func pastDeadline(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

func (b *mgetBatcher) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func (b *mgetBatcher) fail(batch []*mgetCall, err error) {
	for _, c := range batch {
		c.err = err
	}
}

// next is called when an MGET is back, with the slot's connection: it
// hands what is queued to the first queued caller, or frees the slot.
func (b *mgetBatcher) next(cn *mgetConn) {
	b.mu.Lock()
	if b.closed && cn != nil {
		cn.close(b)
		cn = nil
	}
	b.idle = append(b.idle, cn)
	if len(b.pending) == 0 || b.closed {
		b.inflight--
		b.mu.Unlock()
		return
	}
	n, keys := 0, 0
	for n < len(b.pending) && (n == 0 || keys+len(b.pending[n].ids) <= b.maxKeys) {
		keys += len(b.pending[n].ids)
		n++
	}
	batch := append(b.pending[0].batch[:0], b.pending[:n]...)
	b.pending = append(b.pending[:0], b.pending[n:]...)
	for _, c := range batch {
		c.state = callMember
	}
	lead := batch[0]
	lead.state, lead.batch = callLeader, batch
	b.mu.Unlock()
	lead.done <- struct{}{}
}

func removeCall(calls []*mgetCall, c *mgetCall) []*mgetCall {
	for i, x := range calls {
		if x == c {
			return append(calls[:i], calls[i+1:]...)
		}
	}
	return calls
}

// close fails every queued read and every later one with ErrClosed, and
// closes the connections (one in use fails its read, and is not reused).
func (b *mgetBatcher) close() {
	b.mu.Lock()
	b.closed = true
	pending := b.pending
	b.pending = nil
	for _, c := range pending {
		c.state = callMember
		c.err = ErrClosed
	}
	conns := b.conns
	b.conns = nil
	b.mu.Unlock()
	for _, cn := range conns {
		cn.nc.Close()
	}
	for _, c := range pending {
		c.done <- struct{}{}
	}
}

// mgetConn is one slot's connection to Redis.
type mgetConn struct {
	nc       net.Conn
	r        *bufio.Reader
	w        []byte    // the request being written
	deadline time.Time // nc's read and write deadline
}

// dial connects, authenticates and selects the database.
func (b *mgetBatcher) dial(ctx context.Context) (*mgetConn, error) {
	d := net.Dialer{Timeout: b.timeout}
	nc, err := d.DialContext(ctx, "tcp", b.addr)
	if err != nil {
		return nil, err
	}
	cn := &mgetConn{nc: nc, r: bufio.NewReaderSize(nc, 32<<10)}
	var hello [][]string
	if b.password != "" {
		hello = append(hello, []string{"AUTH", b.password})
	}
	if b.db != 0 {
		hello = append(hello, []string{"SELECT", strconv.Itoa(b.db)})
	}
	if len(hello) > 0 {
		cn.setDeadline(ctx, b.timeout)
		for _, args := range hello {
			cn.w = appendCommand(cn.w, args...)
		}
		_, err = nc.Write(cn.w)
		for range hello {
			if err != nil {
				break
			}
			var line []byte
			if line, err = cn.line(); err == nil && line[0] != '+' {
				err = cn.replyError(line)
			}
		}
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("cannot set up a redis connection to %s: %w", b.addr, err)
		}
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		nc.Close()
		return nil, ErrClosed
	}
	b.conns = append(b.conns, cn)
	b.mu.Unlock()
	return cn, nil
}

// close closes the connection and forgets it.
func (cn *mgetConn) close(b *mgetBatcher) {
	cn.nc.Close()
	b.mu.Lock()
	if i := slices.Index(b.conns, cn); i >= 0 {
		b.conns = slices.Delete(b.conns, i, i+1)
	}
	b.mu.Unlock()
}

// setDeadline bounds the next exchange by timeout, or by ctx's deadline
// if sooner. The deadline is moved only when it is due within half the
// timeout or ctx's is sooner: setting one costs a timer update per call.
func (cn *mgetConn) setDeadline(ctx context.Context, timeout time.Duration) {
	now := time.Now()
	d, ok := ctx.Deadline()
	if !ok || d.After(now.Add(timeout)) {
		if cn.deadline.After(now.Add(timeout/2)) && !cn.deadline.After(now.Add(timeout)) {
			return
		}
		d = now.Add(timeout)
	}
	cn.nc.SetDeadline(d)
	cn.deadline = d
}

// mget sends one MGET of every call's keys and reads the reply into the
// calls' buffers.
func (cn *mgetConn) mget(ctx context.Context, b *mgetBatcher, batch []*mgetCall, keys int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cn.setDeadline(ctx, b.timeout)
	w := appendArrayHeader(cn.w[:0], 1+keys)
	w = appendBulk(w, "MGET")
	for _, c := range batch {
		for _, id := range c.ids {
			n := len(b.prefix) + len("v:") + len(c.entity) + len(":") + len(id)
			w = append(w, '$')
			w = strconv.AppendInt(w, int64(n), 10)
			w = append(w, "\r\n"...)
			w = appendVectorKey(w, b.prefix, c.entity, id)
			w = append(w, "\r\n"...)
		}
	}
	cn.w = w
	if _, err := cn.nc.Write(w); err != nil {
		return err
	}
	line, err := cn.line()
	if err != nil {
		return err
	}
	if line[0] == '-' {
		return cn.replyError(line)
	}
	if n, ok := parseHeader(line, '*'); !ok || n != keys {
		return fmt.Errorf("redis answered MGET of %d keys with %.40q", keys, line)
	}
	for _, c := range batch {
		for range c.ids {
			line, err := cn.line()
			if err != nil {
				return err
			}
			n, ok := parseHeader(line, '$')
			if !ok {
				return fmt.Errorf("redis answered an MGET value with %.40q", line)
			}
			if n < 0 {
				c.raw = append(c.raw, nil) // no such key
				continue
			}
			at := len(c.buf)
			if c.buf, err = appendBulkBody(cn.r, n, c.buf); err != nil {
				return err
			}
			c.raw = append(c.raw, c.buf[at:at+n:at+n])
		}
	}
	return nil
}

// line reads one reply line, without its CRLF; it is never empty.
func (cn *mgetConn) line() ([]byte, error) { return readLine(cn.r) }

// replyError turns an error reply line ("-ERR ...") into a redisError; any
// other line is a protocol error.
func (cn *mgetConn) replyError(line []byte) error {
	if line[0] == '-' {
		return redisError(line[1:])
	}
	return fmt.Errorf("unexpected redis reply %.40q", line)
}
