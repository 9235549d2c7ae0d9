package featurestore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// nearCache keeps the vectors a scorer read from Redis in its own memory
// and forgets each one as soon as Redis says it changed: Redis's
// server-assisted client-side caching (CLIENT TRACKING, Redis 6 and
// later). A hit costs a map lookup instead of a round trip to Redis, which
// on a busy machine is most of a prediction's latency.
//
// One connection of its own subscribes to __redis__:invalidate and turns
// on tracking in broadcast mode for the vector keys (prefix "v:"),
// redirected to itself: Redis then sends it the name of every vector key
// any client changes or deletes (and every one it evicts or expires, when
// it does), whether or not this process read it. Broadcast rather than default mode, which tracks the keys each
// connection read, because then the cache's correctness hangs on one
// connection only: the read connections can come and go. (Reports name
// keys, not databases: another database's writes to the same key names
// drop entries for nothing, and cost nothing else.)
//
// Rules that keep the cache from answering a value older than Redis's by
// more than a bound:
//   - a read fills the cache only if no invalidation touched its shard
//     between the lookup that missed and the fill (the rowCache
//     generation): an invalidation for a write that raced the read either
//     comes before the fill, which then does not happen, or after it, and
//     removes it;
//   - the connection is pinged every pingEvery; a pong proves that Redis
//     delivered every invalidation it sent before the ping, so the cache
//     is fresh as of the ping's sending. The cache answers only while
//     that is at most maxStale ago: a stalled or cut connection turns hits
//     into reads from Redis within maxStale;
//   - losing the connection empties the cache; it fills again once a new
//     connection tracks;
//   - with a TTL, an entry whose vector was updated more than the TTL ago
//     is not answered: Redis reports an expiry only when it deletes the
//     key, which may be long after.
//
// Own code rather than go-redis's PubSub: the connection must learn its
// client id (CLIENT ID) and turn on tracking before it subscribes, and
// its pongs must be matched to the pings' send times.
type nearCache struct {
	rows     *rowCache
	addr     string
	password string
	prefix   string        // the store's key prefix (config), before "v:"
	ttl      time.Duration // the store's TTL: 0, none
	timeout  time.Duration
	log      *slog.Logger

	pingEvery time.Duration
	maxStale  time.Duration

	// fresh is when (UnixNano) the last answered ping was sent: Redis had
	// delivered every invalidation up to then. 0 while not tracking.
	fresh atomic.Int64

	invalidations, flushes atomic.Uint64
	bypassed               atomic.Uint64 // lookups made while not usable

	mu      sync.Mutex
	nc      net.Conn    // the tracking connection; nil while down
	pings   []time.Time // sent and not yet answered, oldest first
	closed  bool
	stop    chan struct{}
	stopped chan struct{}

	// beforeFill, in tests, runs between a read from Redis and its fill.
	beforeFill func()
}

const (
	nearPingEvery = 20 * time.Millisecond
	nearMaxStale  = 100 * time.Millisecond
)

// errNoTracking is a server refusing CLIENT TRACKING (before Redis 6, or a
// proxy or ACL that forbids it).
type errNoTracking struct{ err error }

func (e errNoTracking) Error() string {
	return "redis does not track keys for client-side caching: " + e.err.Error()
}

// openNearCache connects the tracking connection and starts keeping it up.
func openNearCache(ctx context.Context, addr, password, keyPrefix string, budget int64, ttl, timeout time.Duration, log *slog.Logger) (*nearCache, error) {
	n := &nearCache{
		rows: newRowCache(budget), addr: addr, password: password,
		prefix: keyPrefix, ttl: ttl, timeout: timeout, log: log,
		pingEvery: nearPingEvery, maxStale: nearMaxStale,
		stop: make(chan struct{}), stopped: make(chan struct{}),
	}
	nc, r, err := n.connect(ctx)
	if err != nil {
		return nil, err
	}
	go n.run(nc, r)
	// Answer from the cache from the first read: wait for the first pong.
	for deadline := time.Now().Add(timeout); n.fresh.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Microsecond)
	}
	return n, nil
}

// usable says whether lookups may answer from the cache now.
func (n *nearCache) usable() bool {
	f := n.fresh.Load()
	return f != 0 && time.Now().UnixNano()-f <= int64(n.maxStale)
}

// connect dials, turns tracking on and subscribes.
func (n *nearCache) connect(ctx context.Context) (net.Conn, *bufio.Reader, error) {
	d := net.Dialer{Timeout: n.timeout}
	nc, err := d.DialContext(ctx, "tcp", n.addr)
	if err != nil {
		return nil, nil, err
	}
	nc.SetDeadline(time.Now().Add(n.timeout))
	r := bufio.NewReaderSize(nc, 16<<10)
	fail := func(err error) (net.Conn, *bufio.Reader, error) {
		nc.Close()
		return nil, nil, err
	}
	var w []byte
	if n.password != "" {
		w = appendCommand(w, "AUTH", n.password)
	}
	w = appendCommand(w, "CLIENT", "ID")
	if _, err := nc.Write(w); err != nil {
		return fail(err)
	}
	if n.password != "" {
		if err := expectOK(r); err != nil {
			return fail(err)
		}
	}
	line, err := readLine(r)
	if err != nil {
		return fail(err)
	}
	if line[0] == '-' {
		return fail(errNoTracking{redisError(line[1:])})
	}
	id, err := strconv.ParseInt(string(line[1:]), 10, 64)
	if line[0] != ':' || err != nil {
		return fail(fmt.Errorf("redis answered CLIENT ID with %.40q", line))
	}
	w = appendCommand(w[:0], "CLIENT", "TRACKING", "ON", "REDIRECT", strconv.FormatInt(id, 10), "BCAST", "PREFIX", n.prefix+"v:")
	w = appendCommand(w, "SUBSCRIBE", invalidateChannel)
	if _, err := nc.Write(w); err != nil {
		return fail(err)
	}
	if err := expectOK(r); err != nil {
		var re redisError
		if errors.As(err, &re) {
			err = errNoTracking{err}
		}
		return fail(err)
	}
	// The subscription's confirmation: subscribe, the channel, 1.
	if err := n.readMessage(r); err != nil {
		return fail(err)
	}
	nc.SetDeadline(time.Time{})
	return nc, r, nil
}

const invalidateChannel = "__redis__:invalidate"

// run keeps a tracking connection up until close: it serves nc, and on
// its loss empties the cache and connects again.
func (n *nearCache) run(nc net.Conn, r *bufio.Reader) {
	defer close(n.stopped)
	backoff := 50 * time.Millisecond
	warned := false // once per outage
	for {
		if nc != nil {
			n.serve(nc, r)
			n.flush()
			backoff, warned = 50*time.Millisecond, false
		}
		select {
		case <-n.stop:
			return
		default:
		}
		var err error
		ctx, cancel := context.WithTimeout(context.Background(), n.timeout)
		nc, r, err = n.connect(ctx)
		cancel()
		if err == nil {
			n.log.Info("redis near cache tracking again", "addr", n.addr)
			continue
		}
		if !warned {
			n.log.Warn("redis near cache cannot track; reads go to redis until it can", "addr", n.addr, "err", err)
			warned = true
		}
		select {
		case <-n.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// serve reads nc's messages until it fails, pinging it meanwhile.
func (n *nearCache) serve(nc net.Conn, r *bufio.Reader) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		nc.Close()
		return
	}
	n.nc = nc
	n.pings = n.pings[:0]
	n.mu.Unlock()
	// Fresh once the first pong is in; the cache was emptied when the last
	// connection was lost, and only reads that start from now fill it.
	pingDone := make(chan struct{})
	go n.ping(nc, pingDone)
	for {
		if err := n.readMessage(r); err != nil {
			break
		}
	}
	nc.Close()
	<-pingDone
	n.mu.Lock()
	n.nc = nil
	n.mu.Unlock()
}

// ping sends a PING every pingEvery, and closes nc when one has gone
// unanswered for the timeout.
func (n *nearCache) ping(nc net.Conn, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(n.pingEvery)
	defer t.Stop()
	cmd := appendCommand(nil, "PING")
	for {
		now := time.Now()
		n.mu.Lock()
		late := len(n.pings) > 0 && now.Sub(n.pings[0]) > n.timeout
		if !late {
			n.pings = append(n.pings, now)
		}
		n.mu.Unlock()
		if late {
			nc.Close()
			return
		}
		nc.SetWriteDeadline(now.Add(n.timeout))
		if _, err := nc.Write(cmd); err != nil {
			nc.Close()
			return
		}
		select {
		case <-t.C:
		case <-n.stop:
			nc.Close()
			return
		}
	}
}

// readMessage reads one message of the subscribed connection and acts on
// it: an invalidation drops keys (a null one, after FLUSHALL, all of
// them), a pong moves fresh.
func (n *nearCache) readMessage(r *bufio.Reader) error {
	line, err := readLine(r)
	if err != nil {
		return err
	}
	if line[0] == '-' {
		return redisError(line[1:])
	}
	parts, ok := parseHeader(line, '*')
	if !ok || parts < 2 {
		return fmt.Errorf("unexpected message on the tracking connection: %.40q", line)
	}
	kind, err := readBulk(r, nil)
	if err != nil {
		return err
	}
	switch string(kind) {
	case "pong":
		if _, err := readBulk(r, nil); err != nil {
			return err
		}
		n.mu.Lock()
		if len(n.pings) > 0 {
			n.fresh.Store(n.pings[0].UnixNano())
			n.pings = slices.Delete(n.pings, 0, 1)
		}
		n.mu.Unlock()
		return nil
	case "subscribe":
		if _, err := readBulk(r, nil); err != nil {
			return err
		}
		_, err := readLine(r) // the number of subscriptions
		return err
	case "message":
		if _, err := readBulk(r, nil); err != nil { // the channel
			return err
		}
		line, err := readLine(r)
		if err != nil {
			return err
		}
		if line[0] == '$' { // one key, or null
			k, ok := parseHeader(line, '$')
			if !ok {
				return fmt.Errorf("unexpected invalidation %.40q", line)
			}
			if k < 0 {
				n.flush()
				return nil
			}
			key, err := readBulkBody(r, k, nil)
			if err != nil {
				return err
			}
			n.invalidate(key)
			return nil
		}
		keys, ok := parseHeader(line, '*')
		if !ok {
			return fmt.Errorf("unexpected invalidation %.40q", line)
		}
		if keys < 0 {
			n.flush()
			return nil
		}
		var kb [128]byte
		for range keys {
			key, err := readBulk(r, kb[:0])
			if err != nil {
				return err
			}
			n.invalidate(key)
		}
		return nil
	}
	return fmt.Errorf("unexpected %q message on the tracking connection", kind)
}

func (n *nearCache) invalidate(key []byte) {
	n.invalidations.Add(1)
	n.rows.drop(key)
}

// flush empties the cache and stops hits until the next pong.
func (n *nearCache) flush() {
	n.fresh.Store(0)
	n.flushes.Add(1)
	n.rows.flush()
}

// close stops the tracking connection and waits for its goroutines.
func (n *nearCache) close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	close(n.stop)
	if n.nc != nil {
		n.nc.Close()
	}
	n.mu.Unlock()
	<-n.stopped
	n.fresh.Store(0)
}

// appendRaw answers what it can of ids from the cache and reads the rest
// with one MGET of reads, filling the cache with them. It has AppendRaw's
// contract.
func (n *nearCache) appendRaw(ctx context.Context, reads *mgetBatcher, entity string, ids []string, buf []byte, raw [][]byte) ([]byte, [][]byte, error) {
	var kb [128]byte
	var missAt [8]int
	var missGen [8]uint64
	misses, gens := missAt[:0], missGen[:0]
	rawMark := len(raw)
	var notBefore int64
	if n.ttl > 0 {
		// Redis deletes an expired key when its active expiry samples it
		// (it may take long among many keys with a TTL) or a command
		// touches it: until then no report comes. A vector updated more
		// than the TTL ago is read from Redis instead.
		notBefore = time.Now().Add(-n.ttl).UnixMilli()
	}
	for i, id := range ids {
		key := appendVectorKey(kb[:0], n.prefix, entity, id)
		at := len(buf)
		var ok bool
		var gen uint64
		buf, ok, gen = n.rows.get(key, buf, notBefore)
		if ok {
			raw = append(raw, buf[at:len(buf):len(buf)])
			continue
		}
		raw = append(raw, nil)
		misses, gens = append(misses, i), append(gens, gen)
	}
	if len(misses) == 0 {
		return buf, raw, nil
	}
	missIDs := ids
	if len(misses) < len(ids) {
		missIDs = make([]string, len(misses))
		for j, i := range misses {
			missIDs[j] = ids[i]
		}
	}
	var gb [8][]byte
	buf, got, err := reads.read(ctx, entity, missIDs, buf, gb[:0])
	if err != nil {
		return buf, raw[:rawMark], err
	}
	if n.beforeFill != nil {
		n.beforeFill()
	}
	for j, i := range misses {
		raw[rawMark+i] = got[j]
		if got[j] != nil {
			n.rows.fill(appendVectorKey(kb[:0], n.prefix, entity, ids[i]), got[j], gens[j])
		}
	}
	return buf, raw, nil
}

func (n *nearCache) stats() CacheStats {
	hits, misses := n.rows.counts()
	return CacheStats{
		Hits: hits, Misses: misses + n.bypassed.Load(),
		Invalidations: n.invalidations.Load(), Flushes: n.flushes.Load(),
	}
}
