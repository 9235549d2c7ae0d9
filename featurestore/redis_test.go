package featurestore

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
)

func TestRedisTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const ttl = time.Second
	r := openTestRedis(t, RedisOptions{TTL: ttl})
	write := func(id string) {
		t.Helper()
		if err := r.Write(ctx, []Update{{Vector: Vector{Entity: "user", ID: id}, Enter: []string{"s"}}}); err != nil {
			t.Fatal(err)
		}
	}
	write("active")
	write("inactive")
	time.Sleep(ttl * 6 / 10)
	write("active") // each write starts the TTL again
	time.Sleep(ttl * 6 / 10)
	if _, err := r.Get(ctx, "user", "active"); err != nil {
		t.Fatalf("entity written %v ago: %v", ttl*6/10, err)
	}
	if _, err := r.Get(ctx, "user", "inactive"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("entity written %v ago: %v, want ErrNotFound", ttl*12/10, err)
	}
	// Membership is the stream's: an expired vector stays a member.
	if n, err := r.SegmentCount(ctx, "user", "s"); err != nil || n != 2 {
		t.Fatalf("count after expiry: %d %v", n, err)
	}
}

// TestRedisKeyPrefix: stores with different prefixes share a database
// without seeing each other's keys.
func TestRedisKeyPrefix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	addr := testenv.Redis(t)
	open := func() *Redis {
		r, err := OpenRedis(config.Redis{Addr: addr, KeyPrefix: testenv.RedisKeyPrefix(t)}, RedisOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b := open(), open()
	if err := a.Write(ctx, []Update{{Vector: Vector{Entity: "user", ID: "1"}, Enter: []string{"s"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "user", "1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other prefix: %v", err)
	}
	if n, err := b.SegmentCount(ctx, "user", "s"); err != nil || n != 0 {
		t.Fatalf("other prefix count: %d %v", n, err)
	}
	if _, err := a.Get(ctx, "user", "1"); err != nil {
		t.Fatal(err)
	}
}

// TestRedisDown: with the server gone, calls fail fast with an error, and
// the same store works again once the server is back.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	r, err := OpenRedis(config.Redis{Addr: srv.Addr(), KeyPrefix: "pulse:"}, RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Write(ctx, []Update{{Vector: Vector{Entity: "user", ID: "1"}, Enter: []string{"s"}}}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, call := range []struct {
		name string
		do   func() error
	}{
		{"Get", func() error { _, err := r.Get(ctx, "user", "1"); return err }},
		{"GetMany", func() error { _, _, err := r.GetMany(ctx, "user", []string{"1"}); return err }},
		{"Write", func() error { return r.Write(ctx, []Update{{Vector: Vector{Entity: "user", ID: "2"}}}) }},
		{"SegmentCount", func() error { _, err := r.SegmentCount(ctx, "user", "s"); return err }},
	} {
		start := time.Now()
		err := call.do()
		took := time.Since(start)
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Fatalf("%s with Redis down: %v, want an error", call.name, err)
		}
		if took > time.Second {
			t.Fatalf("%s with Redis down took %v", call.name, took)
		}
		t.Logf("%s with Redis down: %v after %v", call.name, err, took)
	}
	if _, err := OpenRedis(config.Redis{Addr: srv.Addr()}, RedisOptions{}); err == nil {
		t.Fatal("OpenRedis of a stopped server succeeded")
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// Reads dial again on the next call (writes go through go-redis, which
	// after PoolSize failed dials waits for a background probe, once a
	// second): recovery takes at most about a second.
	back := time.Now()
	for {
		_, err := r.Get(ctx, "user", "1")
		if err == nil {
			break
		}
		if time.Since(back) > 5*time.Second {
			t.Fatalf("Get %v after Redis came back: %v", time.Since(back), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("Get works again %v after Redis came back", time.Since(back))
}

// TestRedisHung: a server that accepts but does not answer (overloaded, a
// network partition) costs a caller its timeout, not a hang; and a context
// deadline sooner than the timeout wins.
func TestRedisHung(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newFreezingProxy(t, testenv.Redis(t))
	// The timeout is long next to the 50ms deadline below, so that a
	// busy machine cannot blur which of the two ended a read.
	const timeout = time.Second
	r, err := OpenRedis(config.Redis{Addr: p.addr(), KeyPrefix: testenv.RedisKeyPrefix(t)}, RedisOptions{Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Write(ctx, []Update{{Vector: Vector{Entity: "user", ID: "1"}}}); err != nil {
		t.Fatal(err)
	}
	p.freeze()
	start := time.Now()
	_, err = r.Get(ctx, "user", "1")
	took := time.Since(start)
	if err == nil {
		t.Fatal("Get from a hung server succeeded")
	}
	// One try and one retry on a fresh connection, each up to the
	// timeout. The bound leaves room for the race detector on two busy
	// cores; what it proves is that a hung server costs a read a few
	// timeouts, not forever.
	if took > 4*timeout+time.Second {
		t.Fatalf("Get from a hung server took %v (timeout %v)", took, timeout)
	}
	t.Logf("Get from a hung server: %v after %v", err, took)

	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := r.Get(dctx, "user", "1"); err == nil {
		t.Fatal("Get from a hung server succeeded")
	}
	if took := time.Since(start); took > timeout {
		t.Fatalf("Get with a 50ms deadline took %v", took)
	}

	p.thaw()
	if _, err := r.Get(ctx, "user", "1"); err != nil {
		t.Fatalf("Get after the server answers again: %v", err)
	}
}

// freezingProxy forwards TCP connections to a server; while frozen it
// accepts and reads but forwards nothing, as a hung server would.
type freezingProxy struct {
	ln     net.Listener
	target string

	mu   sync.Mutex
	gate chan struct{} // closed while forwarding
}

func newFreezingProxy(t *testing.T, target string) *freezingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezingProxy{ln: ln, target: target, gate: make(chan struct{})}
	close(p.gate)
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, s)
			mu.Unlock()
			conns.Add(2)
			go func() { defer conns.Done(); p.pipe(s, c) }()
			go func() { defer conns.Done(); p.pipe(c, s) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		p.thaw()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	return p
}

func (p *freezingProxy) addr() string { return p.ln.Addr().String() }

func (p *freezingProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default:
	}
}

func (p *freezingProxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// pipe copies src to dst; when either side ends, it closes both, which ends
// the other direction's pipe too.
func (p *freezingProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.gate
			p.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// A Redis that lost writes keeps member lists the vectors disagree with;
// RepairMembers puts them right from the vectors: a member put back, a
// member taken out (of a configured list and of a list no segment uses
// any more), and a member without a vector (expired, or lost) left alone.
// A dry run only counts.
func TestRedisRepairMembers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := openTestRedis(t, RedisOptions{})
	write := func(id string, segs ...string) {
		t.Helper()
		if err := r.Write(ctx, []Update{{Vector: Vector{Entity: "user", ID: id, Segments: segs}, Enter: segs}}); err != nil {
			t.Fatal(err)
		}
	}
	write("u1", "a", "b")
	write("u2", "a")
	write("u3")
	write("u4", "a")
	// What a lost write leaves behind.
	for _, cmd := range [][]any{
		{"ZREM", r.segmentKey("user", "a"), "u1"}, // u1 entered a: lost
		{"ZADD", r.segmentKey("user", "b"), 0, "u2"},
		{"ZADD", r.segmentKey("user", "rfm:old"), 0, "u3"},
		{"DEL", r.vectorKey("user", "u4")},
	} {
		if err := r.c.Do(ctx, cmd...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	r.Write(ctx, []Update{{Vector: Vector{Entity: "order", ID: "u2"}, Enter: []string{"b"}}}) // another entity's
	members := func(seg string) []string {
		t.Helper()
		ids, _, err := r.SegmentMembers(ctx, "user", seg, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	drifted := map[string][]string{"a": {"u2", "u4"}, "b": {"u1", "u2"}, "rfm:old": {"u3"}}
	want := map[string][]string{"a": {"u1", "u2", "u4"}, "b": {"u1"}, "rfm:old": nil}

	rep, err := r.RepairMembers(ctx, "user", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Added != 1 || rep.Removed != 2 || rep.Vectors != 3 || rep.Lists != 3 {
		t.Errorf("dry run: %+v, want 1 added, 2 removed, 3 vectors, 3 lists", rep)
	}
	for seg, ids := range drifted {
		if got := members(seg); !slices.Equal(got, ids) {
			t.Errorf("after a dry run, %s: %q, want %q as it was", seg, got, ids)
		}
	}
	rep, err = r.RepairMembers(ctx, "user", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Added != 1 || rep.Removed != 2 {
		t.Errorf("repair: %+v, want 1 added, 2 removed", rep)
	}
	for seg, ids := range want {
		if got := members(seg); !slices.Equal(got, ids) {
			t.Errorf("after the repair, %s: %q, want %q", seg, got, ids)
		}
	}
	if ids, _, _ := r.SegmentMembers(ctx, "order", "b", "", 10); !slices.Equal(ids, []string{"u2"}) {
		t.Errorf("another entity type's list: %q", ids)
	}
	if rep, err = r.RepairMembers(ctx, "user", false, nil); err != nil || rep.Added+rep.Removed != 0 {
		t.Errorf("a second repair: %+v %v, want nothing to do", rep, err)
	}
}

// fixMember decides from the vector as it is when it fixes, not as the
// walk read it: here the vector changes between the two.
func TestRedisRepairMemberReadsTheVectorAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := openTestRedis(t, RedisOptions{})
	if err := r.Write(ctx, []Update{{Vector: Vector{Entity: "user", ID: "u1"}}}); err != nil {
		t.Fatal(err)
	}
	// The walk saw u1's vector name "a" (it did, before this write).
	var rep RepairReport
	if err := r.fixMember(ctx, "user", "u1", "a", false, &rep); err != nil {
		t.Fatal(err)
	}
	if n, _ := r.SegmentCount(ctx, "user", "a"); n != 0 || rep.Added != 0 {
		t.Errorf("u1 added to a (count %d, %+v) from a vector that no longer names it", n, rep)
	}
}

// WriteMarked sets the writer's mark after the batch and answers the one
// it replaced: none at first, then the last one set, per writer; a Redis
// that lost the mark (here deleted) answers none again.
func TestRedisWriteMarked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := openTestRedis(t, RedisOptions{})
	write := func(writer string, mark int64) (int64, bool) {
		t.Helper()
		prev, found, err := r.WriteMarked(ctx, []Update{{Vector: Vector{Entity: "user", ID: "u1"}, Enter: []string{"s"}}}, writer, mark)
		if err != nil {
			t.Fatal(err)
		}
		return prev, found
	}
	if _, found := write("p0", 7); found {
		t.Fatal("a mark before the first")
	}
	if prev, found := write("p0", 9); !found || prev != 7 {
		t.Fatalf("second write: prev %d (found %v), want 7", prev, found)
	}
	if _, found := write("p1", 3); found {
		t.Fatal("another writer's mark answered")
	}
	if prev, found, err := r.WriteMarked(ctx, nil, "p0", 10); err != nil || !found || prev != 9 {
		t.Fatalf("a write of the mark alone: %d %v %v, want 9", prev, found, err)
	}
	if err := r.c.Del(ctx, r.markKey("p0")).Err(); err != nil {
		t.Fatal(err)
	}
	if _, found := write("p0", 11); found {
		t.Fatal("a deleted mark answered")
	}
	if _, err := r.Get(ctx, "user", "u1"); err != nil {
		t.Fatalf("the batch with the marks: %v", err)
	}
}
