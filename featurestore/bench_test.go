package featurestore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// The Get benchmarks read a 25-feature vector (benchVector) and, in the
// same benchmark, the backend's bare read of a raw value of the same size:
// Get/raw is the cost of Pulse's layer (key, decode, wrapping) over the
// storage itself.

func BenchmarkPebbleGet(b *testing.B) {
	ctx := context.Background()
	p, err := OpenPebble(b.TempDir(), PebbleOptions{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	v := benchVector()
	if err := p.Write(ctx, []Update{{Vector: v}}); err != nil {
		b.Fatal(err)
	}
	size := len(Encode(v, nil))
	raw := []byte("raw/user/612")
	if err := p.db.Set(raw, []byte(strings.Repeat("x", size)), pebble.Sync); err != nil {
		b.Fatal(err)
	}
	b.Run("Get", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.Get(ctx, "user", "612"); err != nil {
				b.Fatal(err)
			}
		}
	})
	rawGet := func() error {
		_, closer, err := p.db.Get(raw)
		if err != nil {
			return err
		}
		return closer.Close()
	}
	b.Run("raw", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			if err := rawGet(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("NotFound", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.Get(ctx, "user", "nobody"); !errors.Is(err, ErrNotFound) {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkRedisGet(b *testing.B) {
	ctx := context.Background()
	addr, db := testenv.RedisDB(b)
	// Near cache off: every Get is a round trip (Get-near below is not).
	r, err := OpenRedis(config.Redis{Addr: addr, DB: db, KeyPrefix: "pulse:"}, RedisOptions{CacheSize: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	near, err := OpenRedis(config.Redis{Addr: addr, DB: db, KeyPrefix: "pulse:"}, RedisOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer near.Close()
	v := benchVector()
	if err := r.Write(ctx, []Update{{Vector: v}}); err != nil {
		b.Fatal(err)
	}
	size := len(Encode(v, nil))
	if err := r.c.Set(ctx, "raw", strings.Repeat("x", size), 0).Err(); err != nil {
		b.Fatal(err)
	}
	b.Run("Get", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Get(ctx, "user", "612"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Get-near", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := near.Get(ctx, "user", "612"); err != nil {
				b.Fatal(err)
			}
		}
		if st := near.CacheStats(); st.Hits < st.Misses {
			b.Fatalf("near cache %+v: mostly misses", st)
		}
	})
	// The same client's GET of a raw key: a round trip, as
	// `redis-benchmark -t get -d <size> -c 1` measures it.
	rawGet := func() error { return r.c.Get(ctx, "raw").Err() }
	b.Run("raw-GET", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			if err := rawGet(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ratio", func(b *testing.B) {
		benchRatio(b, func() error { _, err := r.Get(ctx, "user", "612"); return err }, rawGet)
	})
}

// benchRatio alternates get and raw in one loop and reports each one's
// ns/op and their ratio: on a shared machine the load varies from one
// sub-benchmark to the next, but hits both sides of the ratio alike. (Not
// for Pebble: there the two interleaved evict each other's cache lines and
// the raw read looks 5x slower than alone.)
func benchRatio(b *testing.B, get, raw func() error) {
	var tGet, tRaw time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := get(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := raw(); err != nil {
			b.Fatal(err)
		}
		tGet += t1.Sub(t0)
		tRaw += time.Since(t1)
	}
	b.ReportMetric(float64(tGet.Nanoseconds())/float64(b.N), "get-ns/op")
	b.ReportMetric(float64(tRaw.Nanoseconds())/float64(b.N), "raw-ns/op")
	b.ReportMetric(float64(tGet)/float64(tRaw), "get/raw")
}

// The Write benchmarks write batches of 100 updates, each entering one of
// 4 segments, as a stream task does after a fetch.

func benchBatches(n int) [][]Update {
	v := benchVector()
	batches := make([][]Update, n)
	for i := range batches {
		batch := make([]Update, 100)
		for j := range batch {
			u := Update{Vector: v}
			u.Vector.ID = fmt.Sprint(i*100 + j)
			u.Enter = []string{fmt.Sprint("seg", j%4)}
			batch[j] = u
		}
		batches[i] = batch
	}
	return batches
}

func benchWrite(b *testing.B, s Store) {
	ctx := context.Background()
	batches := benchBatches(100)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := s.Write(ctx, batches[i%len(batches)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/update")
}

func BenchmarkPebbleWrite(b *testing.B) {
	p, err := OpenPebble(b.TempDir(), PebbleOptions{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	benchWrite(b, p)
}

// BenchmarkRedisWriteTracked: what scorers' near caches cost the stream's
// writes. Redis reports every written vector key to every near cache open
// on the prefix (broadcast tracking); tracked-by-N has N of them open in
// this process. redis-server's CPU per update (INFO cpu) and this
// process's (the writer plus the caches reading the reports) are
// reported; a private server, so nothing else counts.
func BenchmarkRedisWriteTracked(b *testing.B) {
	srv := testenv.StartRedis(b)
	for _, n := range []int{0, 1, 4} {
		b.Run(fmt.Sprintf("tracked-by-%d", n), func(b *testing.B) {
			prefix := fmt.Sprintf("t%d:", n)
			for range n {
				r, err := OpenRedis(config.Redis{Addr: srv.Addr(), KeyPrefix: prefix}, RedisOptions{})
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
			}
			w, err := OpenRedis(config.Redis{Addr: srv.Addr(), KeyPrefix: prefix}, RedisOptions{CacheSize: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			server0, self0 := redisServerCPU(b, srv.Addr()), processCPU()
			benchWrite(b, w)
			server, self := redisServerCPU(b, srv.Addr())-server0, processCPU()-self0
			b.ReportMetric(float64(server.Nanoseconds())/float64(b.N*100), "server-ns/update")
			b.ReportMetric(float64(self.Nanoseconds())/float64(b.N*100), "self-ns/update")
		})
	}
}

func BenchmarkRedisWrite(b *testing.B) {
	addr, db := testenv.RedisDB(b)
	r, err := OpenRedis(config.Redis{Addr: addr, DB: db, KeyPrefix: "pulse:"}, RedisOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	benchWrite(b, r)
}
