package featurestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// backend is what the conformance suite needs of a Store implementation.
type backend struct {
	open func(t *testing.T) Store
	// putRaw stores b as the value of entity/id, bypassing Encode.
	putRaw func(t *testing.T, s Store, entity, id string, b []byte)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func pebbleBackend() backend {
	return backend{
		open: func(t *testing.T) Store {
			p, err := OpenPebble(t.TempDir(), PebbleOptions{Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			return p
		},
		putRaw: func(t *testing.T, s Store, entity, id string, b []byte) {
			if err := s.(*Pebble).db.Set(vectorKey(nil, entity, id), b, pebble.NoSync); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func openTestRedis(t testing.TB, opts RedisOptions) *Redis {
	t.Helper()
	addr, db := testenv.RedisDB(t)
	r, err := OpenRedis(config.Redis{Addr: addr, DB: db, KeyPrefix: "pulse:"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func redisBackend(opts RedisOptions) backend {
	return backend{
		open: func(t *testing.T) Store { return openTestRedis(t, opts) },
		putRaw: func(t *testing.T, s Store, entity, id string, b []byte) {
			r := s.(*Redis)
			before := r.CacheStats().Invalidations
			if err := r.c.Set(context.Background(), r.vectorKey(entity, id), b, 0).Err(); err != nil {
				t.Fatal(err)
			}
			if r.near != nil {
				// Another client's write reaches the cache when Redis
				// reports it.
				waitFor(t, "the invalidation of a raw write", func() bool { return r.CacheStats().Invalidations > before })
			}
		},
	}
}

func TestPebble(t *testing.T) { testStore(t, pebbleBackend()) }

// TestRedis: the store's reads, each a round trip (near cache off).
func TestRedis(t *testing.T) { testStore(t, redisBackend(RedisOptions{CacheSize: -1})) }

// TestRedisNearCache: the same behaviour with the near cache in front.
func TestRedisNearCache(t *testing.T) { testStore(t, redisBackend(RedisOptions{})) }

// waitFor polls cond for up to 5s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// testStore is the behaviour every backend must have.
func testStore(t *testing.T, b backend) {
	ctx := context.Background()
	at := time.UnixMilli(1_760_000_000_123).UTC()
	vec := func(id string, feats map[string]any, segs ...string) Vector {
		return Vector{Entity: "user", ID: id, Features: feats, Segments: segs, UpdatedAt: at, EventAt: at.Add(-time.Second)}
	}
	write := func(t *testing.T, s Store, batch ...Update) {
		t.Helper()
		if err := s.Write(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	count := func(t *testing.T, s Store, segment string, want int64) {
		t.Helper()
		n, err := s.SegmentCount(ctx, "user", segment)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Fatalf("count of %s = %d, want %d", segment, n, want)
		}
	}
	members := func(t *testing.T, s Store, segment string) []string {
		t.Helper()
		var all []string
		cursor := ""
		for {
			ids, next, err := s.SegmentMembers(ctx, "user", segment, cursor, 3)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, ids...)
			if next == "" {
				return all
			}
			cursor = next
		}
	}

	t.Run("Get", func(t *testing.T) {
		t.Parallel()
		s := b.open(t)
		if _, err := s.Get(ctx, "user", "612"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of a new entity: %v, want ErrNotFound", err)
		}
		v := benchVector()
		write(t, s, Update{Vector: v})
		got, err := s.Get(ctx, "user", "612")
		if err != nil {
			t.Fatal(err)
		}
		assertVector(t, "Get", got, v)
		if _, err := s.Get(ctx, "user", "613"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of another id: %v, want ErrNotFound", err)
		}
		if _, err := s.Get(ctx, "account", "612"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of another entity type: %v, want ErrNotFound", err)
		}
		// Ids are opaque: separators and empty-looking bytes are fine.
		odd := vec("a/b:c d\x00é", map[string]any{"n": 1.0})
		write(t, s, Update{Vector: odd})
		if got, err := s.Get(ctx, "user", odd.ID); err != nil {
			t.Fatal(err)
		} else {
			assertVector(t, "odd id", got, odd)
		}
	})

	t.Run("GetMany", func(t *testing.T) {
		t.Parallel()
		s := b.open(t)
		a, c := vec("a", map[string]any{"n": 1.0}), vec("c", map[string]any{"n": 3.0})
		write(t, s, Update{Vector: a}, Update{Vector: c})
		vecs, found, err := s.GetMany(ctx, "user", []string{"c", "missing", "a", "c"})
		if err != nil {
			t.Fatal(err)
		}
		if want := []bool{true, false, true, true}; !slices.Equal(found, want) {
			t.Fatalf("found %v, want %v", found, want)
		}
		assertVector(t, "0", vecs[0], c)
		assertVector(t, "1", vecs[1], Vector{})
		assertVector(t, "2", vecs[2], a)
		assertVector(t, "3", vecs[3], c)
		vecs, found, err = s.GetMany(ctx, "user", nil)
		if err != nil || len(vecs) != 0 || len(found) != 0 {
			t.Fatalf("GetMany of no ids: %v %v %v", vecs, found, err)
		}
	})

	t.Run("Overwrite", func(t *testing.T) {
		t.Parallel()
		s := b.open(t)
		write(t, s, Update{Vector: vec("1", map[string]any{"a": 1.0, "b": "x"}, "s1")})
		newer := vec("1", map[string]any{"c": []any{"y"}})
		newer.UpdatedAt = at.Add(time.Minute)
		newer.EventAt = time.Time{} // a timer-only recomputation
		write(t, s, Update{Vector: newer})
		got, err := s.Get(ctx, "user", "1")
		if err != nil {
			t.Fatal(err)
		}
		assertVector(t, "overwritten", got, newer) // replaced, not merged
	})

	t.Run("Members", func(t *testing.T) {
		t.Parallel()
		s := b.open(t)
		if ids, next, err := s.SegmentMembers(ctx, "user", "nobody", "", 10); err != nil || len(ids) != 0 || next != "" {
			t.Fatalf("members of an empty segment: %q %q %v", ids, next, err)
		}
		count(t, s, "nobody", 0)
		if _, _, err := s.SegmentMembers(ctx, "user", "nobody", "", 0); err == nil {
			t.Fatal("limit 0 is accepted")
		}
		write(t, s,
			Update{Vector: vec("b", nil), Enter: []string{"s"}},
			Update{Vector: vec("a", nil), Enter: []string{"s"}},
			Update{Vector: vec("c", nil), Enter: []string{"s"}},
		)
		// A page that ends exactly at the last member says there is no more.
		ids, next, err := s.SegmentMembers(ctx, "user", "s", "", 3)
		if err != nil || !slices.Equal(ids, []string{"a", "b", "c"}) || next != "" {
			t.Fatalf("one full page: %q %q %v", ids, next, err)
		}
		ids, next, err = s.SegmentMembers(ctx, "user", "s", "", 2)
		if err != nil || !slices.Equal(ids, []string{"a", "b"}) || next != "b" {
			t.Fatalf("first page: %q %q %v", ids, next, err)
		}
		// A cursor that is no longer a member still works.
		ids, next, err = s.SegmentMembers(ctx, "user", "s", "ab", 2)
		if err != nil || !slices.Equal(ids, []string{"b", "c"}) || next != "" {
			t.Fatalf("page after a non-member: %q %q %v", ids, next, err)
		}
		// Both backends order ids by bytes, whatever they hold.
		odd := []string{"é", "a", "B", "\x01", "a\x00", "Z", "~", "10", "9"}
		for _, id := range odd {
			write(t, s, Update{Vector: vec(id, nil), Enter: []string{"odd"}})
		}
		want := slices.Clone(odd)
		slices.Sort(want)
		if got := members(t, s, "odd"); !slices.Equal(got, want) {
			t.Fatalf("members in order %q, want %q", got, want)
		}
	})

	t.Run("MembersPagination", func(t *testing.T) {
		t.Parallel()
		s := b.open(t)
		const n = 1000
		var batch []Update
		for i := range n {
			batch = append(batch, Update{Vector: vec(fmt.Sprintf("u%04d", i), nil), Enter: []string{"buyers"}})
		}
		write(t, s, batch...)
		count(t, s, "buyers", n)

		// While one reader pages through, a writer adds ids between the
		// existing ones and removes every tenth original.
		removed := map[string]bool{}
		for i := 0; i < n; i += 10 {
			removed[fmt.Sprintf("u%04d", i)] = true
		}
		writeErr := make(chan error, 1)
		go func() {
			var err error
			for i := 0; i < n && err == nil; i += 10 {
				err = s.Write(ctx, []Update{
					{Vector: vec(fmt.Sprintf("u%04d+", i+5), nil), Enter: []string{"buyers"}},
					{Vector: vec(fmt.Sprintf("u%04d", i), nil), Exit: []string{"buyers"}},
				})
			}
			writeErr <- err
		}()
		seen := map[string]int{}
		cursor, prev := "", ""
		for pages := 0; ; pages++ {
			if pages > 2*n {
				t.Fatal("pagination does not end")
			}
			ids, next, err := s.SegmentMembers(ctx, "user", "buyers", cursor, 37)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				if id <= prev {
					t.Fatalf("id %q after %q: not in order", id, prev)
				}
				prev = id
				seen[id]++
			}
			if next == "" {
				break
			}
			if next != ids[len(ids)-1] {
				t.Fatalf("next %q is not the page's last id %q", next, ids[len(ids)-1])
			}
			cursor = next
		}
		if err := <-writeErr; err != nil {
			t.Fatal(err)
		}
		for i := range n {
			id := fmt.Sprintf("u%04d", i)
			if !removed[id] && seen[id] != 1 {
				t.Errorf("member %s seen %d times", id, seen[id])
			}
		}
		count(t, s, "buyers", n) // n/10 left, n/10 entered
		all := members(t, s, "buyers")
		if len(all) != n {
			t.Fatalf("%d members listed, count says %d", len(all), n)
		}
		for _, id := range all {
			if removed[id] {
				t.Fatalf("removed member %s still listed", id)
			}
		}
	})

	t.Run("ReplayedBatch", func(t *testing.T) {
		t.Parallel()
		s := b.open(t)
		write(t, s, Update{Vector: vec("old", nil), Enter: []string{"vip"}})
		batch := []Update{
			{Vector: vec("1", map[string]any{"n": 1.0}, "active", "vip"), Enter: []string{"active", "vip"}},
			{Vector: vec("2", map[string]any{"n": 2.0}, "active"), Enter: []string{"active"}},
			// The same entity twice in a batch, entering the same segment.
			{Vector: vec("2", map[string]any{"n": 3.0}, "active"), Enter: []string{"active"}},
			{Vector: vec("old", nil), Exit: []string{"vip"}},
		}
		for range 3 {
			write(t, s, batch...)
			count(t, s, "active", 2)
			count(t, s, "vip", 1)
			if got := members(t, s, "active"); !slices.Equal(got, []string{"1", "2"}) {
				t.Fatalf("active members %q", got)
			}
			if got := members(t, s, "vip"); !slices.Equal(got, []string{"1"}) {
				t.Fatalf("vip members %q", got)
			}
			got, err := s.Get(ctx, "user", "2")
			if err != nil {
				t.Fatal(err)
			}
			assertVector(t, "last write of 2", got, batch[2].Vector)
		}
	})

	t.Run("Exits", func(t *testing.T) {
		t.Parallel()
		s := b.open(t)
		write(t, s,
			Update{Vector: vec("1", nil), Enter: []string{"a", "b"}},
			Update{Vector: vec("2", nil), Enter: []string{"a"}},
		)
		write(t, s, Update{Vector: vec("1", nil), Exit: []string{"a"}})
		count(t, s, "a", 1)
		count(t, s, "b", 1)
		// Leaving a segment one is not in changes nothing; counts never go
		// below zero.
		write(t, s, Update{Vector: vec("3", nil), Exit: []string{"a", "b", "never"}})
		write(t, s, Update{Vector: vec("1", nil), Exit: []string{"a"}})
		count(t, s, "a", 1)
		count(t, s, "never", 0)
		// Enter and exit in one update: the exit comes after.
		write(t, s, Update{Vector: vec("2", nil), Enter: []string{"b"}, Exit: []string{"a", "b"}})
		count(t, s, "a", 0)
		count(t, s, "b", 1)
		if got := members(t, s, "a"); len(got) != 0 {
			t.Fatalf("a has members %q", got)
		}
		// Re-entering after an exit counts again.
		write(t, s, Update{Vector: vec("1", nil), Enter: []string{"a"}})
		count(t, s, "a", 1)
	})

	t.Run("Delete", func(t *testing.T) {
		t.Parallel()
		s := b.open(t)
		write(t, s,
			Update{Vector: vec("gone", map[string]any{"x": 1.0}, "a"), Enter: []string{"a"}},
			Update{Vector: vec("kept", map[string]any{"x": 2.0}, "a"), Enter: []string{"a"}},
		)
		if _, err := s.Get(ctx, "user", "gone"); err != nil {
			t.Fatal(err) // read once: a cache (Pebble's rows, Redis's near cache) holds it now
		}
		// A deleted entity (a person deleted on request): its vector
		// goes, its exits count; deleting again changes nothing.
		for range 2 {
			write(t, s, Update{Vector: Vector{Entity: "user", ID: "gone"}, Exit: []string{"a"}, Delete: true})
			if _, err := s.Get(ctx, "user", "gone"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get of a deleted vector: %v, want ErrNotFound", err)
			}
			vecs, found, err := s.GetMany(ctx, "user", []string{"gone", "kept"})
			if err != nil || found[0] || !found[1] || vecs[1].Features["x"] != 2.0 {
				t.Fatalf("GetMany after the delete: %v %v %v", vecs, found, err)
			}
			count(t, s, "a", 1)
			if got := members(t, s, "a"); !slices.Equal(got, []string{"kept"}) {
				t.Fatalf("a has members %q, want kept alone", got)
			}
		}
		// The id's next write is a new entity.
		write(t, s, Update{Vector: vec("gone", map[string]any{"x": 3.0})})
		if v, err := s.Get(ctx, "user", "gone"); err != nil || v.Features["x"] != 3.0 {
			t.Fatalf("Get after a new write: %v %v", v, err)
		}
	})

	t.Run("ConcurrentWriters", func(t *testing.T) {
		t.Parallel()
		s := b.open(t)
		const writers, ids = 4, 200
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				// Every writer enters every id, in a different order, in
				// batches of 10: as overlapping stream tasks replaying.
				for i := 0; i < ids; i += 10 {
					var batch []Update
					for j := i; j < i+10; j++ {
						id := fmt.Sprint((j + w*37) % ids)
						batch = append(batch, Update{Vector: vec(id, nil), Enter: []string{"all"}})
					}
					if err := s.Write(ctx, batch); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		count(t, s, "all", ids)
		if got := members(t, s, "all"); len(got) != ids {
			t.Fatalf("%d members", len(got))
		}
	})

	t.Run("EncodingVersions", func(t *testing.T) {
		t.Parallel()
		s := b.open(t)
		write(t, s, Update{Vector: vec("ok", map[string]any{"n": 1.0})})
		future := Encode(vec("x", map[string]any{"n": 1.0}), nil)
		future[0] = EncodingVersion + 1
		b.putRaw(t, s, "user", "future", future)
		b.putRaw(t, s, "user", "garbage", []byte("{\"n\":1}"))
		for _, id := range []string{"future", "garbage"} {
			_, err := s.Get(ctx, "user", id)
			if err == nil || errors.Is(err, ErrNotFound) {
				t.Fatalf("Get of %s: %v, want a decoding error", id, err)
			}
		}
		if _, err := s.Get(ctx, "user", "future"); !errors.Is(err, ErrUnknownVersion) {
			t.Fatalf("Get of a future version: %v, want ErrUnknownVersion", err)
		}
		if _, _, err := s.GetMany(ctx, "user", []string{"ok", "future"}); !errors.Is(err, ErrUnknownVersion) {
			t.Fatalf("GetMany with a future version: %v, want ErrUnknownVersion", err)
		}
	})

	t.Run("Closed", func(t *testing.T) {
		t.Parallel()
		s := b.open(t)
		write(t, s, Update{Vector: vec("1", nil), Enter: []string{"s"}})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		for name, do := range map[string]func() error{
			"Get":            func() error { _, err := s.Get(ctx, "user", "1"); return err },
			"GetMany":        func() error { _, _, err := s.GetMany(ctx, "user", []string{"1"}); return err },
			"Write":          func() error { return s.Write(ctx, []Update{{Vector: vec("2", nil)}}) },
			"SegmentCount":   func() error { _, err := s.SegmentCount(ctx, "user", "s"); return err },
			"SegmentMembers": func() error { _, _, err := s.SegmentMembers(ctx, "user", "s", "", 10); return err },
			"Close":          s.Close,
		} {
			if err := do(); !errors.Is(err, ErrClosed) {
				t.Errorf("%s after Close: %v, want ErrClosed", name, err)
			}
		}
	})

	t.Run("BadNames", func(t *testing.T) {
		t.Parallel()
		s := b.open(t)
		bad := []Update{
			{Vector: Vector{Entity: "", ID: "1"}},
			{Vector: Vector{Entity: "user", ID: ""}},
			{Vector: Vector{Entity: "us:er", ID: "1"}},
			{Vector: Vector{Entity: "user", ID: "1"}, Enter: []string{"a/b"}},
			{Vector: Vector{Entity: "user", ID: "1"}, Exit: []string{""}},
		}
		for i, u := range bad {
			if err := s.Write(ctx, []Update{{Vector: vec("good", nil), Enter: []string{"s"}}, u}); err == nil {
				t.Errorf("bad update %d accepted", i)
			}
		}
		// A rejected batch writes nothing.
		if _, err := s.Get(ctx, "user", "good"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get after a rejected batch: %v", err)
		}
		count(t, s, "s", 0)
		if _, err := s.Get(ctx, "a/b", "1"); err == nil || errors.Is(err, ErrNotFound) {
			t.Fatalf("Get with a bad entity name: %v", err)
		}
		if _, err := s.SegmentCount(ctx, "user", "a/b"); err == nil {
			t.Fatal("SegmentCount with a bad segment name accepted")
		}
		// ':' is allowed in segment names (the RFM groups' rfm:<group>),
		// and such a segment is its own, not a prefix of another.
		write(t, s, Update{Vector: vec("r1", nil), Enter: []string{"rfm:champions", "rfm"}})
		write(t, s, Update{Vector: vec("r2", nil), Enter: []string{"rfm:champions_x"}})
		count(t, s, "rfm:champions", 1)
		count(t, s, "rfm", 1)
		if ids, _, err := s.SegmentMembers(ctx, "user", "rfm:champions", "", 10); err != nil || len(ids) != 1 || ids[0] != "r1" {
			t.Fatalf("members of rfm:champions: %v %v", ids, err)
		}
	})
}

func TestPebbleReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, sync := range []bool{false, true} {
		p, err := OpenPebble(dir, PebbleOptions{Sync: sync, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprint(sync)
		if err := p.Write(ctx, []Update{{Vector: Vector{Entity: "user", ID: id}, Enter: []string{"s"}}}); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
	p, err := OpenPebble(dir, PebbleOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, found, err := p.GetMany(ctx, "user", []string{"false", "true"})
	if err != nil || !found[0] || !found[1] {
		t.Fatalf("after reopening: found %v, err %v", found, err)
	}
	if n, err := p.SegmentCount(ctx, "user", "s"); err != nil || n != 2 {
		t.Fatalf("count after reopening: %d %v", n, err)
	}
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	cfg := &config.Config{}
	cfg.Store.Path = t.TempDir()
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*Pebble); !ok {
		t.Fatalf("default backend is %T", s)
	}
	s.Close()

	addr, db := testenv.RedisDB(t)
	cfg.Store.Backend = "redis"
	cfg.Redis = config.Redis{Addr: addr, DB: db, KeyPrefix: "p:"}
	cfg.Store.TTL = config.Duration(time.Hour)
	s, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := s.(*Redis)
	if err := r.Write(ctx, []Update{{Vector: Vector{Entity: "user", ID: "1"}}}); err != nil {
		t.Fatal(err)
	}
	// The key layout is the documented one, and the TTL from the config.
	ttl, err := r.c.PTTL(ctx, "p:v:user:1").Result()
	if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("TTL of p:v:user:1 is %v (%v), want about 1h", ttl, err)
	}

	if r.near == nil {
		t.Fatal("Open: the redis store has no near cache")
	}
	w, err := OpenWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.(*Redis).near != nil || cfg.Store.RowCacheMB != 0 {
		t.Fatalf("OpenWriter: near cache %v, config's row_cache_mb now %d", w.(*Redis).near, cfg.Store.RowCacheMB)
	}

	cfg.Store.Backend = "memcached"
	if _, err := Open(cfg); err == nil {
		t.Fatal("unknown backend accepted")
	}
}

// Writers encode their vectors in parallel, outside the store's lock:
// each one's values land under its own keys, in Pebble and in the row
// cache, however the writes interleave.
func TestPebbleConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	p, err := OpenPebble(t.TempDir(), PebbleOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const writers, rounds, size = 4, 50, 20
	id := func(w, i int) string { return fmt.Sprintf("w%d-%d", w, i) }
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				batch := make([]Update, size)
				for i := range batch {
					v := Vector{Entity: "user", ID: id(w, i), Features: map[string]any{"w": float64(w), "r": float64(r), "pad": strings.Repeat("x", w*100+i)}}
					batch[i] = Update{Vector: v}
				}
				if err := p.Write(ctx, batch); err != nil {
					errs <- err
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
	for w := range writers {
		for i := range size {
			v, err := p.Get(ctx, "user", id(w, i))
			if err != nil {
				t.Fatal(err)
			}
			if v.Features["w"] != float64(w) || v.Features["r"] != float64(rounds-1) || v.Features["pad"] != strings.Repeat("x", w*100+i) {
				t.Fatalf("%s: %v", id(w, i), v.Features)
			}
		}
	}
}

// The member cache (Pebble.members) keeps counts and members as the
// stored keys give them: enters and exits, repeated ones too, across
// Writes and concurrent writers, with a bound that drops keys all the
// time, and after a reopen of the process.
func TestPebbleMemberCache(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p, err := OpenPebble(dir, PebbleOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	p.membersMax = 5
	segs := []string{"a", "b", "c"}
	const writers, rounds, ids = 3, 200, 8
	var mu sync.Mutex
	model := map[string]map[string]bool{} // segment -> members
	for _, s := range segs {
		model[s] = map[string]bool{}
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for range rounds {
				// Each writer owns its ids, as a stream task owns its
				// entities; an update may enter and exit at random,
				// repeating what is already so.
				var batch []Update
				type op struct {
					id, seg string
					enter   bool
				}
				var ops []op
				for range 1 + rng.IntN(4) {
					id := fmt.Sprintf("w%d-%d", w, rng.IntN(ids))
					u := Update{Vector: Vector{Entity: "user", ID: id, Features: map[string]any{}}}
					for _, s := range segs {
						switch rng.IntN(3) {
						case 0:
							u.Enter = append(u.Enter, s)
						case 1:
							u.Exit = append(u.Exit, s)
						}
					}
					// Write's order: each update's enters, then its exits.
					for _, s := range u.Enter {
						ops = append(ops, op{id, s, true})
					}
					for _, s := range u.Exit {
						ops = append(ops, op{id, s, false})
					}
					batch = append(batch, u)
				}
				if err := p.Write(ctx, batch); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, o := range ops {
					if o.enter {
						model[o.seg][o.id] = true
					} else {
						delete(model[o.seg], o.id)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	check := func(p *Pebble) {
		t.Helper()
		for _, s := range segs {
			n, err := p.SegmentCount(ctx, "user", s)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := p.SegmentMembers(ctx, "user", s, "", 1000)
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Sorted(maps.Keys(model[s]))
			slices.Sort(got)
			if n != int64(len(want)) || !slices.Equal(got, want) {
				t.Fatalf("segment %s: count %d members %v, want %v", s, n, got, want)
			}
		}
	}
	check(p)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if p, err = OpenPebble(dir, PebbleOptions{Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	check(p)
}
