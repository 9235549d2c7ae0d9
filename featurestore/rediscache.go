package featurestore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/rueidis"
)

// vectorReads is the Redis read path: rueidis, with its client-side cache
// when on. Its reads are GETs on one connection with CLIENT TRACKING ON
// (OPTIN, RESP3): Redis remembers which keys the connection read and
// pushes an invalidation on that connection when any client changes one
// of them (the stream's writes, a TTL expiry, a FLUSHDB), and rueidis
// drops the entry. A vector read again before then is served from memory
// with no round trip. rueidis also handles what a hand-written cache
// would get wrong: a GET in flight when its key's invalidation arrives is
// not cached, concurrent misses of one key share one GET, and a
// connection that breaks flushes its whole cache (invalidations sent
// while it was down are lost), so the first reads after a reconnect go to
// Redis. Concurrent misses are written together in one system call
// (rueidis auto-pipelines), as the MGET batching that was here did.
type vectorReads struct {
	c      rueidis.Client
	cache  bool
	static bool // the store sets no TTL: see cacheTTL
	// read is set by the first read served with the cache on: from then
	// on Write fences (see fence).
	read   atomic.Bool
	closed atomic.Bool
}

// cacheTTL bounds how long a cached vector is served without Redis
// confirming it. Tracking invalidates a changed vector within a round
// trip; the TTL only limits the harm of an invalidation that never comes
// (a server bug, a proxy in between that drops push messages). A minute
// is well inside the windows features are computed over, and costs a
// vector read more often than once a minute one GET a minute.
//
// With a store TTL (vectors expire server side), each fill also asks the
// key's PTTL and rueidis ends the entry when the key expires; without
// one, the fill is the GET alone.
const cacheTTL = time.Minute

var cacheReads = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "pulse_store_redis_cache_reads_total",
	Help: "Vectors read from the Redis store, by whether the client-side cache had them (hit) or Redis was asked (miss).",
}, []string{"result"})

var (
	cacheHits   = cacheReads.WithLabelValues("hit")
	cacheMisses = cacheReads.WithLabelValues("miss")
)

// newVectorReads connects the read connection. cacheBytes <= 0 turns the
// cache off (plain GETs, no tracking).
func newVectorReads(addr, password string, db int, timeout time.Duration, cacheBytes int64, storeTTL time.Duration) (*vectorReads, error) {
	opt := rueidis.ClientOption{
		InitAddress:       []string{addr},
		Password:          password,
		SelectDB:          db,
		ForceSingleClient: true,
		// One connection: its cache is the memory bound, and auto-
		// pipelining writes every concurrent miss on it at once.
		PipelineMultiplex: -1,
		CacheSizeEachConn: int(cacheBytes),
		DisableCache:      cacheBytes <= 0,
		// Dial within the timeout, and find a hung server out within
		// about twice it: rueidis pings a connection that received
		// nothing for KeepAlive and drops it when the PING is not
		// answered within ConnWriteTimeout.
		Dialer:           net.Dialer{Timeout: timeout, KeepAlive: timeout / 2},
		ConnWriteTimeout: timeout,
		// A read that failed on a broken connection is tried once more
		// on a new one (the server may have closed it), then the caller
		// hears of it, rather than through rueidis's default backoff.
		RetryDelay: func(attempts int, _ rueidis.Completed, _ error) time.Duration {
			if attempts <= 1 {
				return 0
			}
			return -1
		},
		// CLIENT SETINFO costs a round trip per connection and servers
		// before 7.2 reject it.
		ClientSetInfo: rueidis.DisableClientSetInfo,
		// Small requests and answers: the defaults (0.5 MiB each) are
		// for bulk transfers.
		ReadBufferEachConn:  64 << 10,
		WriteBufferEachConn: 64 << 10,
	}
	c, err := rueidis.NewClient(opt)
	if err != nil {
		if errors.Is(err, rueidis.ErrNoCache) {
			err = fmt.Errorf("the client-side cache needs Redis 6 or later (RESP3 and CLIENT TRACKING); set redis.client_cache_mb to -1 to turn it off: %w", err)
		}
		return nil, err
	}
	return &vectorReads{c: c, cache: cacheBytes > 0, static: storeTTL == 0}, nil
}

// get appends the encoded vectors of keys to buf as AppendRaw does.
func (v *vectorReads) get(ctx context.Context, keys []string, buf []byte, raw [][]byte) ([]byte, [][]byte, error) {
	if v.closed.Load() {
		return buf, raw, ErrClosed
	}
	if v.cache {
		v.read.Store(true)
	}
	if len(keys) == 1 {
		res := v.c.DoCache(ctx, v.cmd(keys[0]), cacheTTL)
		return v.appendResult(res, buf, raw)
	}
	cts := make([]rueidis.CacheableTTL, len(keys))
	for i, k := range keys {
		cts[i] = rueidis.CT(v.cmd(k), cacheTTL)
	}
	mark, rawMark := len(buf), len(raw)
	var err error
	for _, res := range v.c.DoMultiCache(ctx, cts...) {
		if buf, raw, err = v.appendResult(res, buf, raw); err != nil {
			return buf[:mark], raw[:rawMark], err
		}
	}
	return buf, raw, nil
}

func (v *vectorReads) cmd(key string) rueidis.Cacheable {
	c := v.c.B().Get().Key(key).Cache()
	if v.static {
		c = c.ToStaticTTL()
	}
	return c
}

func (v *vectorReads) appendResult(res rueidis.RedisResult, buf []byte, raw [][]byte) ([]byte, [][]byte, error) {
	if v.cache {
		if res.IsCacheHit() {
			cacheHits.Inc()
		} else {
			cacheMisses.Inc()
		}
	}
	s, err := res.ToString()
	if err != nil {
		if rueidis.IsRedisNil(err) {
			return buf, append(raw, nil), nil
		}
		if v.closed.Load() {
			err = ErrClosed
		}
		return buf, raw, err
	}
	at := len(buf)
	buf = append(buf, s...)
	return buf, append(raw, buf[at:len(buf):len(buf)]), nil
}

// fence returns once every invalidation Redis sent the read connection
// before now has been applied: Redis queues an invalidation on the
// tracking connection while it runs the write, so the answer to a PING
// sent after the write comes back behind it. Write calls it, so that
// this process reads its own writes (they go through go-redis, on other
// connections); other processes' writes are seen within a round trip.
func (v *vectorReads) fence(ctx context.Context) error {
	if !v.read.Load() {
		return nil // nothing cached: the stream's stores never read
	}
	return v.c.Do(ctx, v.c.B().Ping().Build()).Error()
}

func (v *vectorReads) close() {
	v.closed.Store(true)
	v.c.Close()
}
