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

// mgetCalls reads how many MGETs the server has run, from INFO commandstats.
func mgetCalls(t testing.TB, addr string) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`cmdstat_mget:calls=(\d+)`).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestRedisReadsCoalesce: many callers reading at once each get exactly
// their own vectors, and the server sees far fewer MGETs than calls.
func TestRedisReadsCoalesce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.StartRedis(t) // private: the MGET count is ours alone
	r, err := OpenRedis(config.Redis{Addr: srv.Addr()}, RedisOptions{CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const users = 500
	writeNumbered(t, r, users)
	before := mgetCalls(t, srv.Addr())
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
	calls := callers * rounds
	mgets := mgetCalls(t, srv.Addr()) - before
	t.Logf("%d reads from %d goroutines took %d MGETs", calls, callers, mgets)
	if mgets >= calls*3/4 {
		t.Fatalf("%d reads took %d MGETs: concurrent reads are not coalesced", calls, mgets)
	}
}

// TestRedisReadsCloseAndCancel: a read after Close fails with ErrClosed;
// a read whose context ends while Redis hangs returns the context's error
// at once, not at the client's timeout.
func TestRedisReadsCloseAndCancel(t *testing.T) {
	t.Parallel()
	addr := testenv.Redis(t)
	proxy := newFreezingProxy(t, addr)
	r, err := OpenRedis(config.Redis{Addr: proxy.addr(), KeyPrefix: testenv.RedisKeyPrefix(t)}, RedisOptions{Timeout: 5 * time.Second, CacheSize: -1})
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
// (queued, in a batch, handed a batch to send) get their context's error
// or their own right answer, never another's, and the batcher ends with no
// MGET counted out and nobody queued.
func TestRedisReadsCancelUnderLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := openTestRedis(t, RedisOptions{CacheSize: -1})
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
	// Senders handed a batch after their caller left finish in the
	// background: wait for them.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.reads.mu.Lock()
		inflight, pending := r.reads.inflight, len(r.reads.pending)
		r.reads.mu.Unlock()
		if inflight == 0 && pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d MGETs still counted out, %d callers queued", inflight, pending)
		}
		time.Sleep(10 * time.Millisecond)
	}
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
// shared machine), redis-cpu-ns/op the server's, keys/MGET the coalescing.
func BenchmarkRedisReadsParallel(b *testing.B) {
	ctx := context.Background()
	srv := testenv.StartRedis(b)
	r, err := OpenRedis(config.Redis{Addr: srv.Addr()}, RedisOptions{CacheSize: -1})
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
	mgets0, serverCPU0, cpu0 := mgetCalls(b, srv.Addr()), redisServerCPU(b, srv.Addr()), processCPU()
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
	cpu, serverCPU, mgets := processCPU()-cpu0, redisServerCPU(b, srv.Addr())-serverCPU0, mgetCalls(b, srv.Addr())-mgets0
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(serverCPU.Nanoseconds())/float64(b.N), "redis-cpu-ns/op")
	b.ReportMetric(float64(b.N)/float64(max(mgets, 1)), "keys/MGET")
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

// TestRedisReadsPassword: the read connections authenticate and select the
// database as go-redis's do; a wrong password fails at open.
func TestRedisReadsPassword(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer admin.Close()
	if err := admin.ConfigSet(ctx, "requirepass", "s3cret").Err(); err != nil {
		t.Fatal(err)
	}
	r, err := OpenRedis(config.Redis{Addr: srv.Addr(), Password: "s3cret", DB: 3}, RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	writeNumbered(t, r, 2)
	if v, err := r.Get(ctx, "user", "1"); err != nil || v.Features["n"] != 1.0 {
		t.Fatalf("Get: %v %v", v, err)
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
	r, err := OpenRedis(config.Redis{Addr: srv.Addr()}, RedisOptions{CacheSize: -1})
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
		for k := range 2 * mgetMaxInflight {
			if v, err := r.Get(ctx, "user", "1"); err != nil || v.Features["n"] != 1.0 {
				t.Fatalf("round %d, read %d after CLIENT KILL: %v %v", round, k, v, err)
			}
		}
	}
}

// TestRedisReadSlots: RedisOptions.ReadSlots is how many read connections
// (MGET slots) a store opens, each dialled at open; 0 gives the default.
func TestRedisReadSlots(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer admin.Close()
	clients := func() int {
		list, err := admin.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(list, "\n")
	}
	// The server lists a connection from its accept to its noticing the
	// close, both a little after the client's side: wait for the count to
	// settle rather than read it once.
	settle := func(ok func(n int) bool) int {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := clients()
			if ok(n) || time.Now().After(deadline) {
				return n
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	base := clients() // the admin connection alone
	for _, slots := range []int{0, 6} {
		r, err := OpenRedis(config.Redis{Addr: srv.Addr()}, RedisOptions{CacheSize: -1, ReadSlots: slots})
		if err != nil {
			t.Fatal(err)
		}
		want := slots
		if want == 0 {
			want = mgetMaxInflight
		}
		if r.reads.maxInflight != want {
			t.Errorf("ReadSlots %d: %d slots, want %d", slots, r.reads.maxInflight, want)
		}
		// The read connections are open (warm), and only they are new
		// besides go-redis's pool, which dials on demand.
		if got := settle(func(n int) bool { return n-base >= want }) - base; got < want {
			t.Errorf("ReadSlots %d: %d new connections, want at least %d", slots, got, want)
		}
		r.Close()
		if n := settle(func(n int) bool { return n == base }); n != base {
			t.Fatalf("ReadSlots %d: %d connections left after Close, want %d", slots, n-base, 0)
		}
	}
}
