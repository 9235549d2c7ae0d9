package featurestore

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
)

func cached(p *Pebble, entity, id string) ([]byte, bool) {
	key := vectorKey(nil, entity, id)
	s := p.rows.shard(key)
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.m[string(key)]
	return v, ok
}

// TestRowCache: reads and writes go through the cache, which never answers
// a value older than the last committed write, even when reads race the
// writes, and stays within its budget.
func TestRowCache(t *testing.T) {
	ctx := context.Background()
	p, err := OpenPebble(t.TempDir(), PebbleOptions{Logger: quiet, RowCacheSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	write := func(id string, n int) {
		t.Helper()
		if err := p.Write(ctx, []Update{{Vector: Vector{Entity: "user", ID: id, Features: map[string]any{"n": float64(n)}}}}); err != nil {
			t.Fatal(err)
		}
	}
	write("1", 1)
	if v, ok := cached(p, "user", "1"); !ok || len(v) == 0 {
		t.Fatal("a written vector is not in the row cache")
	}
	// A vector the cache lost (or never had) is cached by its first read.
	p.rows = newRowCache(256 << 10)
	if _, ok := cached(p, "user", "1"); ok {
		t.Fatal("fresh cache not empty")
	}
	if v, err := p.Get(ctx, "user", "1"); err != nil || v.Features["n"] != 1.0 {
		t.Fatalf("%v %v", v, err)
	}
	if _, ok := cached(p, "user", "1"); !ok {
		t.Fatal("a read vector is not in the row cache")
	}

	// A read that got the old value from Pebble and fills the cache
	// after a write committed the new one must not put the old one back.
	p.rows = newRowCache(256 << 10)
	read, cont, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	p.beforeFill = func() { close(read); <-cont }
	go func() {
		defer close(done)
		if _, err := p.Get(ctx, "user", "1"); err != nil {
			t.Error(err)
		}
	}()
	<-read
	p.beforeFill = nil
	write("1", 2)
	close(cont)
	<-done
	if v, err := p.Get(ctx, "user", "1"); err != nil || v.Features["n"] != 2.0 {
		t.Fatalf("after a read raced a write: %v %v, want n=2", v.Features, err)
	}

	// Readers race writers on a few ids; once the writers are done, every
	// read (cache or not) gives each id's last write.
	const ids, writes = 8, 300
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			var raw [][]byte
			all := []string{"0", "1", "2", "3", "4", "5", "6", "7"}
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				buf, raw, err = p.AppendRaw(ctx, "user", all, buf[:0], raw)
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var wwg sync.WaitGroup
	for w := 0; w < ids; w++ {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			for n := 0; n < writes; n++ {
				if err := p.Write(ctx, []Update{{Vector: Vector{Entity: "user", ID: strconv.Itoa(w), Features: map[string]any{"n": float64(n)}}}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wwg.Wait()
	close(stop)
	wg.Wait()
	for w := 0; w < ids; w++ {
		v, err := p.Get(ctx, "user", strconv.Itoa(w))
		if err != nil || v.Features["n"] != float64(writes-1) {
			t.Fatalf("user %d after the race: %v %v, want n=%d", w, v.Features, err, writes-1)
		}
	}

	// Many vectors: the cache keeps to its budget and the store answers
	// them all.
	var batch []Update
	for i := 0; i < 5000; i++ {
		batch = append(batch, Update{Vector: Vector{Entity: "user", ID: fmt.Sprint("many-", i), Features: map[string]any{"n": float64(i), "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}})
	}
	if err := p.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	var total int64
	for i := range p.rows.shards {
		s := &p.rows.shards[i]
		s.mu.RLock()
		if s.size > p.rows.budget {
			t.Errorf("shard %d holds %d bytes, budget %d", i, s.size, p.rows.budget)
		}
		total += s.size
		s.mu.RUnlock()
	}
	if total > 256<<10 {
		t.Fatalf("row cache holds %d bytes, budget %d", total, 256<<10)
	}
	for i := 0; i < 5000; i += 97 {
		if v, err := p.Get(ctx, "user", fmt.Sprint("many-", i)); err != nil || v.Features["n"] != float64(i) {
			t.Fatalf("many-%d: %v %v", i, v.Features, err)
		}
	}
}

// TestRowCacheOff: a negative size turns it off.
func TestRowCacheOff(t *testing.T) {
	p, err := OpenPebble(t.TempDir(), PebbleOptions{Logger: quiet, RowCacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.rows != nil {
		t.Fatal("row cache on")
	}
	if err := p.Write(context.Background(), []Update{{Vector: Vector{Entity: "user", ID: "1"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Get(context.Background(), "user", "1"); err != nil {
		t.Fatal(err)
	}
}
