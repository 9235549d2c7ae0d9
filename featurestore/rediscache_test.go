package featurestore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// getCalls reads how many GETs the server has run, from INFO commandstats.
func getCalls(t testing.TB, addr string) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`cmdstat_get:calls=(\d+)`).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestRedisReadsConcurrent: many callers reading at once each get exactly
// their own vectors, with the cache on and off; with it on, the server
// sees each key read once.
func TestRedisReadsConcurrent(t *testing.T) {
	t.Parallel()
	for _, cache := range []int64{0, -1} {
		t.Run(fmt.Sprintf("cache=%d", cache), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			srv := testenv.StartRedis(t) // private: the GET count is ours alone
			r, err := OpenRedis(config.Redis{Addr: srv.Addr()}, RedisOptions{ClientCacheSize: cache})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			const users = 500
			writeNumbered(t, r, users)
			before := getCalls(t, srv.Addr())
			const callers, rounds = 64, 200
			var wg sync.WaitGroup
			errs := make(chan error, callers)
			start := make(chan struct{})
			for g := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					for k := range rounds {
						i := (g*rounds + k) % users
						if k%2 == 0 {
							v, err := r.Get(ctx, "user", strconv.Itoa(i))
							if err != nil || v.ID != strconv.Itoa(i) || v.Features["n"] != float64(i) {
								errs <- fmt.Errorf("Get %d: %v %+v", i, err, v)
								return
							}
							continue
						}
						// Two known ids around an unknown one.
						ids := []string{strconv.Itoa(i), "nobody", strconv.Itoa((i + 1) % users)}
						vecs, found, err := r.GetMany(ctx, "user", ids)
						if err != nil || !found[0] || found[1] || !found[2] ||
							vecs[0].Features["n"] != float64(i) || vecs[2].Features["n"] != float64((i+1)%users) {
							errs <- fmt.Errorf("GetMany %v: %v %v %+v", ids, err, found, vecs)
							return
						}
					}
				}()
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			reads := callers * rounds * 2
			gets := getCalls(t, srv.Addr()) - before
			t.Logf("%d vector reads from %d goroutines took %d GETs", reads, callers, gets)
			if cache == 0 && gets > users+1+callers {
				// each key once, a few more for misses of one key that
				// raced (rueidis shares a key's miss, but not across the
				// single and multi-key paths)
				t.Fatalf("%d reads of %d keys took %d GETs with the cache on", reads, users+1, gets)
			}
			if cache < 0 && gets != reads {
				t.Fatalf("%d reads took %d GETs with the cache off", reads, gets)
			}
		})
	}
}

// TestRedisReadsCloseAndCancel: a read after Close fails with ErrClosed;
// a read whose context ends while Redis hangs returns the context's error
// at once, not at the client's timeout.
func TestRedisReadsCloseAndCancel(t *testing.T) {
	t.Parallel()
	addr := testenv.Redis(t)
	proxy := newFreezingProxy(t, addr)
	r, err := OpenRedis(config.Redis{Addr: proxy.addr(), KeyPrefix: testenv.RedisKeyPrefix(t)}, RedisOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	proxy.freeze()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := r.Get(ctx, "user", "1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get with a hung server: %v, want the context's deadline", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Get returned after %v, the context ended after 100ms", took)
	}
	proxy.thaw()
	if err := r.Close(); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	if _, err := r.Get(context.Background(), "user", "1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	if _, _, err := r.GetMany(context.Background(), "user", []string{"1"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetMany after Close: %v, want ErrClosed", err)
	}
	r.Close() // twice is fine
}

// TestRedisReadsCancelUnderLoad: callers whose contexts end at any point
// (queued, on the wire, answered) get their context's error or their own
// right answer, never another's, and the store still answers afterwards.
func TestRedisReadsCancelUnderLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := openTestRedis(t, RedisOptions{})
	const users = 200
	writeNumbered(t, r, users)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	var cancelled, answered sync.Map
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Odd rounds read into buffers the goroutine reuses, as the
			// scorer does: a batch still answering a caller that left
			// must not write into them (the race detector would see it).
			var buf []byte
			var raw [][]byte
			for k := range 150 {
				i := (g*7 + k) % users
				timeout := []time.Duration{time.Microsecond, 30 * time.Microsecond, 200 * time.Microsecond, time.Second}[(g+k)%4]
				cctx, cancel := context.WithTimeout(ctx, timeout)
				var v Vector
				var err error
				if k%2 == 0 {
					v, err = r.Get(cctx, "user", strconv.Itoa(i))
				} else {
					buf, raw, err = r.AppendRaw(cctx, "user", []string{strconv.Itoa(i)}, buf[:0], raw)
					if err == nil {
						v, err = Decode(raw[0])
					}
					for j := range buf {
						buf[j] = 0xff // the caller's to scribble on
					}
				}
				cancel()
				switch {
				case err == nil:
					if v.Features["n"] != float64(i) {
						errs <- fmt.Errorf("user %d answered %v", i, v.Features)
						return
					}
					answered.Store(g*1000+k, true)
				case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
					cancelled.Store(g*1000+k, true)
				default:
					errs <- fmt.Errorf("user %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	count := func(m *sync.Map) (n int) {
		m.Range(func(any, any) bool { n++; return true })
		return n
	}
	t.Logf("%d answered, %d cancelled", count(&answered), count(&cancelled))
	if _, err := r.Get(ctx, "user", "1"); err != nil {
		t.Fatal(err)
	}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// writeNumbered writes users "0".."n-1", user i with feature n = i.
func writeNumbered(t testing.TB, s Store, n int) {
	t.Helper()
	var batch []Update
	for i := range n {
		batch = append(batch, Update{Vector: Vector{Entity: "user", ID: strconv.Itoa(i),
			Features: map[string]any{"n": float64(i)}}})
	}
	if err := s.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkRedisReadsParallel: many callers reading one vector each at
// once, as a scorer under load does, against a private redis-server.
// cpu-ns/op is this process's CPU time per read (steadier than ns/op on a
// shared machine), redis-cpu-ns/op the server's, GETs/op the reads the
// client-side cache did not answer (cache=off: every one).
func BenchmarkRedisReadsParallel(b *testing.B) {
	for _, cache := range []int64{0, -1} {
		name := "cache=on"
		if cache < 0 {
			name = "cache=off"
		}
		b.Run(name, func(b *testing.B) { benchRedisReadsParallel(b, cache) })
	}
}

func benchRedisReadsParallel(b *testing.B, cache int64) {
	ctx := context.Background()
	srv := testenv.StartRedis(b)
	r, err := OpenRedis(config.Redis{Addr: srv.Addr()}, RedisOptions{ClientCacheSize: cache})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	const users = 1000
	var batch []Update
	for i := range users {
		batch = append(batch, Update{Vector: benchVector()})
		batch[i].Vector.ID = strconv.Itoa(i)
	}
	if err := r.Write(ctx, batch); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, users)
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	b.SetParallelism(32)
	b.ReportAllocs()
	gets0, serverCPU0, cpu0 := getCalls(b, srv.Addr()), redisServerCPU(b, srv.Addr()), processCPU()
	b.ResetTimer()
	var seq atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		var buf []byte
		var raw [][]byte
		var err error
		for pb.Next() {
			i := int(seq.Add(1) % users)
			buf, raw, err = r.AppendRaw(ctx, "user", ids[i:i+1], buf[:0], raw)
			if err != nil || raw[0] == nil {
				b.Errorf("AppendRaw %d: %v", i, err)
				return
			}
		}
	})
	b.StopTimer()
	cpu, serverCPU, gets := processCPU()-cpu0, redisServerCPU(b, srv.Addr())-serverCPU0, getCalls(b, srv.Addr())-gets0
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(serverCPU.Nanoseconds())/float64(b.N), "redis-cpu-ns/op")
	b.ReportMetric(float64(gets)/float64(b.N), "GETs/op")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisServerCPU is the CPU time the server has used (INFO cpu).
func redisServerCPU(t testing.TB, addr string) time.Duration {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, m := range regexp.MustCompile(`used_cpu_(?:sys|user):([0-9.]+)`).FindAllStringSubmatch(info, -1) {
		f, _ := strconv.ParseFloat(m[1], 64)
		total += f
	}
	return time.Duration(total * float64(time.Second))
}

// TestRedisReadsPassword: the read connection authenticates, selects the
// database and reads under the key prefix as go-redis's do, and its cache
// is invalidated there; a wrong password fails at open.
func TestRedisReadsPassword(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer admin.Close()
	if err := admin.ConfigSet(ctx, "requirepass", "s3cret").Err(); err != nil {
		t.Fatal(err)
	}
	r, err := OpenRedis(config.Redis{Addr: srv.Addr(), Password: "s3cret", DB: 3, KeyPrefix: "p:"}, RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	writeNumbered(t, r, 2)
	if v, err := r.Get(ctx, "user", "1"); err != nil || v.Features["n"] != 1.0 {
		t.Fatalf("Get: %v %v", v, err)
	}
	// The cached vector is invalidated by a write in that database under
	// that prefix, from another client.
	write := otherWriter(t, srv.Addr(), "s3cret", 3, "p:")
	write("1", 7)
	waitForN(t, r, "1", 7)
	db3 := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: "s3cret", DB: 3})
	defer db3.Close()
	if n, err := db3.Exists(ctx, "p:v:user:1").Result(); err != nil || n != 1 {
		t.Fatalf("p:v:user:1 in db 3: %d %v", n, err)
	}
	if _, err := OpenRedis(config.Redis{Addr: srv.Addr(), Password: "wrong"}, RedisOptions{}); err == nil {
		t.Fatal("OpenRedis with a wrong password succeeded")
	}
}

// TestRedisReadsServerClosedConnections: connections the server closed
// (a restart, CLIENT KILL, an idle timeout) cost the next reads a new
// connection, not an error.
func TestRedisReadsServerClosedConnections(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	r, err := OpenRedis(config.Redis{Addr: srv.Addr()}, RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	writeNumbered(t, r, 2)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer admin.Close()
	for round := range 3 {
		if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
			t.Fatal(err)
		}
		for k := range 4 {
			if v, err := r.Get(ctx, "user", "1"); err != nil || v.Features["n"] != 1.0 {
				t.Fatalf("round %d, read %d after CLIENT KILL: %v %v", round, k, v, err)
			}
		}
	}
}

// otherWriter writes vectors as the stream does, from its own go-redis
// client: the store's cache hears of it only through Redis.
func otherWriter(t *testing.T, addr, password string, db int, prefix string) func(id string, n float64) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, DB: db})
	t.Cleanup(func() { c.Close() })
	return func(id string, n float64) {
		t.Helper()
		v := Vector{Entity: "user", ID: id, Features: map[string]any{"n": n}}
		if err := c.Set(context.Background(), prefix+"v:user:"+id, Encode(v, nil), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// readN reads user id's feature n; -1 when the user is not found.
func readN(t *testing.T, r *Redis, id string) float64 {
	t.Helper()
	v, err := r.Get(context.Background(), "user", id)
	if errors.Is(err, ErrNotFound) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return v.Features["n"].(float64)
}

// waitForN reads until user id has n, for at most a second, and then
// reads a few more times: once the new value was seen, the old one never
// comes back.
func waitForN(t *testing.T, r *Redis, id string, n float64) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := readN(t, r, id)
		if got == n {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("user %s still reads n=%v %v after it was written n=%v", id, got, time.Since(start), n)
		}
		time.Sleep(100 * time.Microsecond)
	}
	took := time.Since(start)
	for range 100 {
		if got := readN(t, r, id); got != n {
			t.Fatalf("user %s read n=%v after it had read the newer n=%v", id, got, n)
		}
	}
	return took
}

// TestRedisCacheHit: a vector read again is served from memory, with no
// command to the server; a vector another client rewrites is read anew.
func TestRedisCacheHit(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t) // private: the command counts are ours alone
	r, err := OpenRedis(config.Redis{Addr: srv.Addr(), KeyPrefix: "p:"}, RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	write := otherWriter(t, srv.Addr(), "", 0, "p:")
	write("1", 1)
	if got := readN(t, r, "1"); got != 1 {
		t.Fatalf("first read: n=%v", got)
	}
	if got := readN(t, r, "nobody"); got != -1 {
		t.Fatalf("unknown user: n=%v", got)
	}
	gets := getCalls(t, srv.Addr())
	for range 100 {
		if got := readN(t, r, "1"); got != 1 {
			t.Fatalf("cached read: n=%v", got)
		}
		if got := readN(t, r, "nobody"); got != -1 {
			t.Fatalf("cached unknown user: n=%v", got)
		}
		var buf []byte
		buf, raw, err := r.AppendRaw(context.Background(), "user", []string{"1", "nobody"}, buf, nil)
		if err != nil || len(raw) != 2 || raw[0] == nil || raw[1] != nil {
			t.Fatalf("cached AppendRaw: %q %v", raw, err)
		}
	}
	if n := getCalls(t, srv.Addr()) - gets; n != 0 {
		t.Fatalf("400 reads of 2 cached keys sent %d GETs", n)
	}
	// A rewrite, and the creation of a key that was read as missing.
	write("1", 2)
	write("nobody", 3)
	t.Logf("rewrite seen after %v, creation after %v", waitForN(t, r, "1", 2), waitForN(t, r, "nobody", 3))
	if n := getCalls(t, srv.Addr()) - gets; n != 2 {
		t.Fatalf("after two rewrites, %d GETs, want 2", n)
	}
}

// TestRedisCacheInvalidation: readers that keep reading while another
// client rewrites vectors see each new version within a second, and never
// an older one after a newer.
func TestRedisCacheInvalidation(t *testing.T) {
	t.Parallel()
	addr, db := testenv.RedisDB(t)
	prefix := testenv.RedisKeyPrefix(t)
	r, err := OpenRedis(config.Redis{Addr: addr, DB: db, KeyPrefix: prefix}, RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	write := otherWriter(t, addr, "", db, prefix)
	const users = 20
	for i := range users {
		write(strconv.Itoa(i), 0)
	}
	stop := make(chan struct{})
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var seen [users]float64 // the newest version this reader saw
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (g + k) % users
				v, err := r.Get(context.Background(), "user", strconv.Itoa(i))
				if err != nil {
					errs <- err
					return
				}
				n := v.Features["n"].(float64)
				if n < seen[i] {
					errs <- fmt.Errorf("user %d read n=%v after n=%v", i, n, seen[i])
					return
				}
				seen[i] = n
			}
		}()
	}
	var slowest time.Duration
	for version := 1; version <= 30; version++ {
		i := version % users
		write(strconv.Itoa(i), float64(version))
		if took := waitForN(t, r, strconv.Itoa(i), float64(version)); took > slowest {
			slowest = took
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("slowest rewrite seen after %v", slowest)
}

// TestRedisCacheFlushedOnDisconnect: when the read connection is killed,
// invalidations sent meanwhile are lost, so the cache must be dropped:
// a vector rewritten after the kill is read new, and reads go on working.
func TestRedisCacheFlushedOnDisconnect(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	r, err := OpenRedis(config.Redis{Addr: srv.Addr(), KeyPrefix: "p:"}, RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	write := otherWriter(t, srv.Addr(), "", 0, "p:")
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer admin.Close()
	for round := range 3 {
		write("1", float64(10*round))
		waitForN(t, r, "1", float64(10*round))
		// Kill the tracking connection (flags t), then write: the write's
		// invalidation has no connection to go to.
		list, err := admin.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		killed := 0
		for _, line := range strings.Split(list, "\n") {
			f := map[string]string{}
			for _, kv := range strings.Fields(line) {
				k, v, _ := strings.Cut(kv, "=")
				f[k] = v
			}
			if strings.Contains(f["flags"], "t") {
				if err := admin.Do(ctx, "CLIENT", "KILL", "ID", f["id"]).Err(); err != nil {
					t.Fatal(err)
				}
				killed++
			}
		}
		if killed != 1 {
			t.Fatalf("round %d: %d tracking connections, want 1:\n%s", round, killed, list)
		}
		write("1", float64(10*round+1))
		t.Logf("round %d: rewrite after CLIENT KILL seen after %v", round, waitForN(t, r, "1", float64(10*round+1)))
	}
}

// TestRedisCacheOff: with the cache off, every read asks Redis, and no
// connection is tracked.
func TestRedisCacheOff(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	r, err := OpenRedis(config.Redis{Addr: srv.Addr()}, RedisOptions{ClientCacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	writeNumbered(t, r, 1)
	gets := getCalls(t, srv.Addr())
	for range 10 {
		if got := readN(t, r, "0"); got != 0 {
			t.Fatalf("n=%v", got)
		}
	}
	if n := getCalls(t, srv.Addr()) - gets; n != 10 {
		t.Fatalf("10 reads with the cache off sent %d GETs", n)
	}
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer admin.Close()
	list, err := admin.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`flags=\S*t`).MatchString(list) {
		t.Fatalf("a tracked connection with the cache off:\n%s", list)
	}
}
