package kafka

import (
	"fmt"
	"net"
	"reflect"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Reachability says whether a client can reach its brokers, from the
// connections it dials: a broker is down from a dial that failed (refused,
// timed out) until one succeeds. ProducerOpts installs one in every
// producer; ReachabilityOf finds it. A killed broker is known down within
// milliseconds (its in-flight requests fail and the redial is refused), a
// black-holed one after the dial timeout (5 s). Safe for concurrent use.
type Reachability struct {
	mu   sync.Mutex
	down map[int32]error // by node id, the brokers whose last dial failed
	seen map[int32]bool  // the brokers dialled at least once
	// gone is closed when every broker dialled is down, and replaced by
	// an open one when one comes back.
	gone chan struct{}
	err  error // why, while gone is closed
}

// NewReachability starts with every broker reachable.
func NewReachability() *Reachability {
	return &Reachability{down: map[int32]error{}, seen: map[int32]bool{}, gone: make(chan struct{})}
}

// ReachabilityOf is the Reachability ProducerOpts installed in cl, or nil.
func ReachabilityOf(cl *kgo.Client) *Reachability {
	// franz-go hands its hooks back as its own (unexported) slice type.
	for _, v := range cl.OptValues(kgo.WithHooks) {
		hooks := reflect.ValueOf(v)
		if hooks.Kind() != reflect.Slice {
			continue
		}
		for i := range hooks.Len() {
			if r, ok := hooks.Index(i).Interface().(*Reachability); ok {
				return r
			}
		}
	}
	return nil
}

// Err is nil while some broker dialled is reachable (or none was dialled
// yet), else why none is.
func (r *Reachability) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Gone is closed once no broker is reachable; ask again after Err is nil.
func (r *Reachability) Gone() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gone
}

// OnBrokerConnect implements kgo.HookBrokerConnect.
func (r *Reachability) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen[meta.NodeID] = true
	if err != nil {
		r.down[meta.NodeID] = fmt.Errorf("kafka broker %s:%d unreachable: %w", meta.Host, meta.Port, err)
	} else {
		delete(r.down, meta.NodeID)
	}
	allDown := r.allDown()
	switch {
	case allDown && r.err == nil:
		r.err = r.down[meta.NodeID]
		close(r.gone)
		mReachable.Set(0)
	case !allDown && r.err != nil:
		r.err = nil
		r.gone = make(chan struct{})
		mReachable.Set(1)
	}
}

// allDown: every broker dialled is down. The seed brokers (negative node
// ids) count only until a broker of the cluster's metadata was dialled:
// the client seldom dials a seed again after that.
func (r *Reachability) allDown() bool {
	cluster := false
	for id := range r.seen {
		if id >= 0 {
			cluster = true
			break
		}
	}
	for id := range r.seen {
		if (id >= 0 || !cluster) && r.down[id] == nil {
			return false
		}
	}
	return len(r.seen) > 0
}
