package featurestore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// nearPair opens two stores on one prefix of addr: reader with the near
// cache (a scorer) and writer without (the stream, another process).
func nearPair(t *testing.T, addr string) (reader, writer *Redis) {
	t.Helper()
	prefix := testenv.RedisKeyPrefix(t)
	open := func(opts RedisOptions) *Redis {
		r, err := OpenRedis(config.Redis{Addr: addr, KeyPrefix: prefix}, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	reader, writer = open(RedisOptions{}), open(RedisOptions{CacheSize: -1})
	if reader.near == nil {
		t.Fatal("the reader has no near cache")
	}
	// Counts of hits are asserted exactly: a ping answered late on a
	// loaded machine must not turn a hit into a read from Redis. (The
	// staleness bound has its own test.)
	reader.near.maxStale = time.Minute
	return reader, writer
}

func writeN(t testing.TB, s Store, id string, n int) {
	t.Helper()
	if err := s.Write(context.Background(), []Update{{Vector: Vector{Entity: "user", ID: id, Features: map[string]any{"n": float64(n)}}}}); err != nil {
		t.Fatal(err)
	}
}

// cachedOne starts a private redis-server and opens nearPair on it, with
// user 1 (n = 1, written by the writer) in the reader's cache.
func cachedOne(t *testing.T) (srv *testenv.Server, reader, writer *Redis) {
	t.Helper()
	srv = testenv.StartRedis(t)
	reader, writer = nearPair(t, srv.Addr())
	writeOther(t, reader, writer, "1", 1)
	readN(t, reader, "1")
	hits := reader.CacheStats().Hits
	readN(t, reader, "1")
	if reader.CacheStats().Hits != hits+1 {
		t.Fatalf("stats %+v: user 1 not cached", reader.CacheStats())
	}
	return srv, reader, writer
}

// writeOther writes as another client, and waits until r heard of it.
func writeOther(t testing.TB, r, w *Redis, id string, n int) {
	t.Helper()
	before := r.CacheStats().Invalidations
	writeN(t, w, id, n)
	waitFor(t, "the invalidation of a write", func() bool { return r.CacheStats().Invalidations > before })
}

func readN(t testing.TB, s Store, id string) float64 {
	t.Helper()
	v, err := s.Get(context.Background(), "user", id)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := v.Features["n"].(float64)
	return n
}

// TestRedisNearCacheHits: a vector read once is answered from memory the
// next times, without a command to Redis.
func TestRedisNearCacheHits(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	r, w := nearPair(t, srv.Addr())
	writeOther(t, r, w, "1", 1)
	readN(t, r, "1")
	before := mgetCalls(t, srv.Addr())
	for range 10 {
		if n := readN(t, r, "1"); n != 1 {
			t.Fatalf("n = %v, want 1", n)
		}
	}
	// Several ids at once: the cached one from memory, the others in one
	// MGET, answered in order.
	writeOther(t, r, w, "2", 2)
	_, raw, err := r.AppendRaw(context.Background(), "user", []string{"2", "1", "nobody"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 3 || raw[2] != nil {
		t.Fatalf("raw = %q", raw)
	}
	for i, want := range []float64{2, 1} {
		v, err := Decode(raw[i])
		if err != nil || v.Features["n"] != want {
			t.Fatalf("raw[%d] = %v %v, want n %v", i, v, err, want)
		}
	}
	if got := mgetCalls(t, srv.Addr()) - before; got != 1 {
		t.Fatalf("%d MGETs for 10 cached reads and one read of 2 new ids, want 1", got)
	}
	if st := r.CacheStats(); st.Hits != 11 || st.Misses != 3 {
		t.Fatalf("stats %+v, want 11 hits and 3 misses", st)
	}
}

// TestRedisNearCacheInvalidation: another client's write, a delete and a
// FLUSHDB reach the cache as Redis reports them; this store's own writes
// are read back at once.
func TestRedisNearCacheInvalidation(t *testing.T) {
	t.Parallel()
	_, r, w := cachedOne(t)
	ctx := context.Background()
	writeN(t, w, "1", 2)
	waitFor(t, "the other client's write", func() bool { return readN(t, r, "1") == 2 })
	if r.CacheStats().Invalidations == 0 {
		t.Fatal("no invalidation counted")
	}
	// Own writes: no wait.
	readN(t, r, "1")
	for i := 3; i < 20; i++ {
		writeN(t, r, "1", i)
		if n := readN(t, r, "1"); n != float64(i) {
			t.Fatalf("read %v after own write of %d", n, i)
		}
	}
	readN(t, r, "1")
	if err := w.c.Del(ctx, w.vectorKey("user", "1")).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delete", func() bool {
		_, err := r.Get(ctx, "user", "1")
		return errors.Is(err, ErrNotFound)
	})
	writeOther(t, r, w, "1", 1)
	readN(t, r, "1")
	flushes := r.CacheStats().Flushes
	if err := w.c.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the flush", func() bool { return r.CacheStats().Flushes > flushes })
	if _, err := r.Get(ctx, "user", "1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after FLUSHDB: %v, want ErrNotFound", err)
	}
}

// TestRedisNearCacheReadRacesWrite: a read that got the old vector from
// Redis and fills the cache after another client's write was reported
// must not put the old vector back (it would stay there: Redis reports a
// change once).
func TestRedisNearCacheReadRacesWrite(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	r, w := nearPair(t, srv.Addr())
	writeOther(t, r, w, "1", 1)
	r.near.beforeFill = func() {
		r.near.beforeFill = nil
		before := r.CacheStats().Invalidations
		writeN(t, w, "1", 2)
		waitFor(t, "the invalidation", func() bool { return r.CacheStats().Invalidations > before })
	}
	if n := readN(t, r, "1"); n != 1 {
		t.Fatalf("first read %v, want the old 1", n)
	}
	for range 3 {
		if n := readN(t, r, "1"); n != 2 {
			t.Fatalf("read %v after the write was reported, want 2", n)
		}
	}
}

// TestRedisNearCacheTrackingLost: when the tracking connection is killed
// the cache empties and reads go to Redis until a new one tracks; then
// hits resume.
func TestRedisNearCacheTrackingLost(t *testing.T) {
	t.Parallel()
	srv, r, w := cachedOne(t)
	ctx := context.Background()
	flushes := r.CacheStats().Flushes
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer admin.Close()
	if err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the cache to empty", func() bool { return r.CacheStats().Flushes > flushes })
	writeN(t, w, "1", 2)
	if n := readN(t, r, "1"); n != 2 {
		t.Fatalf("read %v after losing tracking and another client's write, want 2", n)
	}
	waitFor(t, "hits again", func() bool {
		h := r.CacheStats().Hits
		readN(t, r, "1")
		return r.CacheStats().Hits > h
	})
	writeN(t, w, "1", 3)
	waitFor(t, "the write after reconnecting", func() bool { return readN(t, r, "1") == 3 })
}

// TestRedisNearCacheStalled: a tracking connection that stops answering
// (its invalidations stuck on the way) stops hits within maxStale, so a
// change it did not deliver is read from Redis.
func TestRedisNearCacheStalled(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	r, w := nearPair(t, srv.Addr())
	// Track through a proxy, reads direct.
	proxy := newFreezingProxy(t, srv.Addr())
	r.near.close()
	// A 5 s timeout: the stalled connection is not given up on during the
	// test, so only the staleness bound can end the stale reads.
	near, err := openNearCache(context.Background(), proxy.addr(), "", r.prefix, 1<<20, 0, 5*time.Second, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer near.close()
	r.near = near
	writeOther(t, r, w, "1", 1)
	readN(t, r, "1")
	readN(t, r, "1")
	if r.CacheStats().Hits != 1 {
		t.Fatalf("stats %+v: not cached", r.CacheStats())
	}
	proxy.freeze()
	writeN(t, w, "1", 2)
	misses := r.CacheStats().Misses
	start := time.Now()
	waitFor(t, "the stalled cache to stop answering", func() bool { return readN(t, r, "1") == 2 })
	// The slack is for a busy machine; a cache with no staleness bound
	// never stops answering and fails waitFor instead.
	if d := time.Since(start); d > near.maxStale+near.pingEvery+5*time.Second {
		t.Fatalf("stale reads for %v, want at most about %v", d, near.maxStale+near.pingEvery)
	}
	// Reads that went to Redis because the cache could not answer count
	// as misses.
	if r.CacheStats().Misses == misses {
		t.Fatal("reads while the cache could not answer were not counted as misses")
	}
	proxy.thaw()
}

// TestRedisNearCacheConcurrent: readers racing a writer all end on its
// last value (a stale fill would stay for good), under -race.
func TestRedisNearCacheConcurrent(t *testing.T) {
	t.Parallel()
	r, w := nearPair(t, testenv.Redis(t))
	const ids, versions = 8, 200
	for i := range ids {
		writeN(t, w, fmt.Sprint(i), 0)
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for g := range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			ctx := context.Background()
			buf, raw := []byte(nil), [][]byte(nil)
			idl := make([]string, ids)
			for i := range idl {
				idl[i] = fmt.Sprint((i + g) % ids)
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				buf, raw, err = r.AppendRaw(ctx, "user", idl[:1+g%ids], buf[:0], raw[:0])
				if err != nil {
					t.Error(err)
					return
				}
				time.Sleep(20 * time.Microsecond) // leave the writer a core
			}
		}()
	}
	for v := 1; v <= versions; v++ {
		writeN(t, w, fmt.Sprint(v%ids), v)
		time.Sleep(200 * time.Microsecond) // let the readers hit between writes
	}
	close(stop)
	readers.Wait()
	for i := range ids {
		want := float64(versions - (versions-i)%ids) // the last v with v%ids == i
		waitFor(t, "the last version of "+fmt.Sprint(i), func() bool { return readN(t, r, fmt.Sprint(i)) == want })
	}
	if r.CacheStats().Hits == 0 {
		t.Fatal("no hits: the cache was not exercised")
	}
}

// TestRedisNearCacheTTL: with a TTL, a cached vector is not answered once
// it has outlived the TTL, though Redis has not deleted it yet (no report
// came): active expiry is off here, as it is in effect for a key among
// many with a TTL.
func TestRedisNearCacheTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer admin.Close()
	if err := admin.Do(ctx, "DEBUG", "SET-ACTIVE-EXPIRE", "0").Err(); err != nil {
		t.Fatal(err)
	}
	const ttl = time.Second
	prefix := testenv.RedisKeyPrefix(t)
	open := func(opts RedisOptions) *Redis {
		r, err := OpenRedis(config.Redis{Addr: srv.Addr(), KeyPrefix: prefix}, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	r, w := open(RedisOptions{TTL: ttl}), open(RedisOptions{TTL: ttl, CacheSize: -1})
	r.near.maxStale = time.Minute // exact counts, as in nearPair
	before := r.CacheStats().Invalidations
	for _, v := range []Vector{
		{Entity: "user", ID: "1", UpdatedAt: time.Now()},
		{Entity: "user", ID: "undated"},
	} {
		if err := w.Write(ctx, []Update{{Vector: v}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the writes' invalidations", func() bool { return r.CacheStats().Invalidations >= before+2 })
	for range 2 {
		for _, id := range []string{"1", "undated"} {
			if _, err := r.Get(ctx, "user", id); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The undated vector cannot be timed: never answered from the cache.
	if st := r.CacheStats(); st.Hits != 1 || st.Misses != 3 {
		t.Fatalf("stats %+v, want 1 hit (the dated vector) and 3 misses", st)
	}
	time.Sleep(ttl + 100*time.Millisecond)
	if _, err := r.Get(ctx, "user", "1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after the TTL: %v, want ErrNotFound", err)
	}
}
