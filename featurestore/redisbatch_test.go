package featurestore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// mgetCalls reads how many MGETs the server has run, from INFO commandstats.
func mgetCalls(t *testing.T, addr string) int {
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
	r, err := OpenRedis(config.Redis{Addr: srv.Addr()}, RedisOptions{})
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
// (queued, in a batch, handed a batch to send) get their context's error
// or their own right answer, never another's, and the batcher ends with no
// MGET counted out and nobody queued.
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
			for k := range 150 {
				i := (g*7 + k) % users
				timeout := []time.Duration{time.Microsecond, 30 * time.Microsecond, 200 * time.Microsecond, time.Second}[(g+k)%4]
				cctx, cancel := context.WithTimeout(ctx, timeout)
				v, err := r.Get(cctx, "user", strconv.Itoa(i))
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
func writeNumbered(t *testing.T, s Store, n int) {
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
