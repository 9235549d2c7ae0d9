package featurestore

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// mgetBatcher coalesces the vector reads of concurrent callers into one
// MGET per round trip (what rueidis calls auto-pipelining; go-redis has no
// such mode). A scorer under load asks for many vectors at once, each in
// its own request: one MGET for all of them costs Redis and this process
// one read and one write system call instead of one each per request, so
// the saturation throughput is the batch's, not a round trip's.
//
// The callers do the work themselves. While fewer than maxInflight MGETs
// are out, a caller sends its own at once: at low load a read is exactly
// one MGET on the caller's goroutine, with no hand-off. Beyond that,
// callers queue; when an MGET comes back, its sender hands everything
// queued (up to maxKeys keys) to the first queued caller, which sends it
// as one MGET and answers the others.
type mgetBatcher struct {
	c           *redis.Client
	maxInflight int
	maxKeys     int

	mu       sync.Mutex
	pending  []*mgetCall
	inflight int // MGETs out
	closed   bool

	calls sync.Pool
}

type callState uint8

const (
	callPending callState = iota // queued, may still leave the queue
	callMember                   // in a batch on its way
	callLeader                   // handed a batch to send (itself first)
)

type mgetCall struct {
	keys  []string
	vals  []any // MGET's answers for keys, in order
	err   error
	state callState   // under mgetBatcher.mu
	batch []*mgetCall // set with callLeader
	done  chan struct{}
}

const (
	mgetMaxInflight = 2   // MGETs out at once at most
	mgetMaxKeys     = 512 // keys per MGET at most (a caller's own keys are never split)
)

func newMgetBatcher(c *redis.Client) *mgetBatcher {
	b := &mgetBatcher{c: c, maxInflight: mgetMaxInflight, maxKeys: mgetMaxKeys}
	b.calls.New = func() any { return &mgetCall{done: make(chan struct{}, 1)} }
	return b
}

// mget returns the values of keys (nil for a missing key) as MGET would.
// The answer slice is the caller's to keep.
func (b *mgetBatcher) mget(ctx context.Context, keys []string) ([]any, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	if b.inflight < b.maxInflight {
		// Nothing is queued while an MGET slot is free: send alone, on the
		// caller's context.
		b.inflight++
		b.mu.Unlock()
		vals, err := b.c.MGet(ctx, keys...).Result()
		if err == nil && len(vals) != len(keys) {
			err = fmt.Errorf("MGET of %d keys answered %d values", len(keys), len(vals))
		}
		b.next()
		return vals, err
	}
	call := b.calls.Get().(*mgetCall)
	call.keys, call.vals, call.err, call.state, call.batch = keys, nil, nil, callPending, nil
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
			// The batch is ours to send: send it for the others.
			batch := call.batch
			go func() {
				<-call.done
				b.send(batch)
			}()
		}
		// A member's batch answers it later; call is left to the GC.
		b.mu.Unlock()
		return nil, ctx.Err()
	}
	if call.state == callLeader {
		b.send(call.batch)
	}
	vals, err := call.vals, call.err
	call.keys, call.vals, call.err, call.batch = nil, nil, nil, nil
	b.calls.Put(call)
	return vals, err
}

// send sends one MGET for batch (its leader first), answers the others,
// and passes the slot on.
func (b *mgetBatcher) send(batch []*mgetCall) {
	n := 0
	for _, c := range batch {
		n += len(c.keys)
	}
	keys := make([]string, 0, n)
	for _, c := range batch {
		keys = append(keys, c.keys...)
	}
	// Several callers' reads: bounded by the client's timeouts, not by one
	// caller's context.
	vals, err := b.c.MGet(context.Background(), keys...).Result()
	if err == nil && len(vals) != len(keys) {
		err = fmt.Errorf("MGET of %d keys answered %d values", len(keys), len(vals))
	}
	at := 0
	for i, c := range batch {
		if err != nil {
			c.err = err
		} else {
			c.vals = vals[at : at+len(c.keys) : at+len(c.keys)]
		}
		at += len(c.keys)
		if i > 0 {
			c.done <- struct{}{}
		}
	}
	b.next()
}

// next is called when an MGET is back: it hands what is queued to the
// first queued caller, or frees the slot.
func (b *mgetBatcher) next() {
	b.mu.Lock()
	if len(b.pending) == 0 || b.closed {
		b.inflight--
		b.mu.Unlock()
		return
	}
	n, keys := 0, 0
	for n < len(b.pending) && (n == 0 || keys+len(b.pending[n].keys) <= b.maxKeys) {
		keys += len(b.pending[n].keys)
		n++
	}
	batch := append([]*mgetCall(nil), b.pending[:n]...)
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

// close fails every queued read and every later one with ErrClosed.
func (b *mgetBatcher) close() {
	b.mu.Lock()
	b.closed = true
	pending := b.pending
	b.pending = nil
	for _, c := range pending {
		c.state = callMember
		c.err = ErrClosed
	}
	b.mu.Unlock()
	for _, c := range pending {
		c.done <- struct{}{}
	}
}
