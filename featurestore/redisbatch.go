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
// Each of a few senders takes the first waiting call, adds every other
// call already waiting (up to maxKeys keys), sends one MGET and hands each
// caller its part of the answer. A lone caller's MGET leaves at once; the
// only cost of the design is one goroutine hand-off each way.
type mgetBatcher struct {
	c       *redis.Client
	queue   chan *mgetCall
	stop    chan struct{}
	wg      sync.WaitGroup
	maxKeys int
	calls   sync.Pool
	once    sync.Once
}

type mgetCall struct {
	keys []string
	vals []any // MGET's answers for keys, in order
	err  error
	done chan struct{}
}

const (
	mgetSenders = 4   // MGETs in flight at most
	mgetMaxKeys = 512 // keys per MGET at most (a caller's own keys are never split)
)

func newMgetBatcher(c *redis.Client) *mgetBatcher {
	b := &mgetBatcher{
		c:       c,
		queue:   make(chan *mgetCall, 4096),
		stop:    make(chan struct{}),
		maxKeys: mgetMaxKeys,
	}
	b.calls.New = func() any { return &mgetCall{done: make(chan struct{}, 1)} }
	b.wg.Add(mgetSenders)
	for range mgetSenders {
		go b.send()
	}
	return b
}

// mget returns the values of keys (nil for a missing key) as MGET would.
// The answer slice is the caller's to keep.
func (b *mgetBatcher) mget(ctx context.Context, keys []string) ([]any, error) {
	call := b.calls.Get().(*mgetCall)
	call.keys, call.vals, call.err = keys, nil, nil
	select {
	case b.queue <- call:
	case <-b.stop:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-call.done:
		vals, err := call.vals, call.err
		call.keys, call.vals, call.err = nil, nil, nil
		b.calls.Put(call)
		return vals, err
	case <-ctx.Done():
		// A sender may still hold call: leave it to the garbage collector.
		return nil, ctx.Err()
	case <-b.stop:
		return nil, ErrClosed
	}
}

func (b *mgetBatcher) send() {
	defer b.wg.Done()
	var (
		calls []*mgetCall
		keys  []string
	)
	for {
		select {
		case first := <-b.queue:
			calls = append(calls[:0], first)
			keys = append(keys[:0], first.keys...)
		more:
			for len(keys) < b.maxKeys {
				select {
				case c := <-b.queue:
					calls = append(calls, c)
					keys = append(keys, c.keys...)
				default:
					break more
				}
			}
			b.do(calls, keys)
		case <-b.stop:
			// Answer whoever is still queued.
			for {
				select {
				case c := <-b.queue:
					c.err = ErrClosed
					c.done <- struct{}{}
				default:
					return
				}
			}
		}
	}
}

// do sends one MGET for calls and answers them. The command's deadline is
// the client's read and write timeouts; each caller also stops waiting at
// its own context's end.
func (b *mgetBatcher) do(calls []*mgetCall, keys []string) {
	vals, err := b.c.MGet(context.Background(), keys...).Result()
	if err == nil && len(vals) != len(keys) {
		err = fmt.Errorf("MGET of %d keys answered %d values", len(keys), len(vals))
	}
	at := 0
	for _, c := range calls {
		if err != nil {
			c.err = err
		} else {
			c.vals = vals[at : at+len(c.keys) : at+len(c.keys)]
		}
		at += len(c.keys)
		c.done <- struct{}{}
	}
	clear(keys) // let the key strings go
}

// close stops the senders; calls waiting or arriving later get ErrClosed.
func (b *mgetBatcher) close() {
	b.once.Do(func() { close(b.stop) })
	b.wg.Wait()
}
