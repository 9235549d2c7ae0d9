package featurestore

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// rowCache keeps encoded vectors in memory in front of Pebble, as
// RocksDB's row cache does: a Pebble Get walks every level's iterators and
// index blocks (most of the scorer's time per prediction), a hit here is a
// map lookup and a copy. Written vectors go in as they are committed
// (the stream's writes keep the active users' vectors hot) and read ones
// as they are read, within a byte budget; a shard over its budget drops
// entries in Go's random map order.
//
// Own code rather than a cache library: the cache must never hold a value
// older than the store's, and a read that raced a write must not put the
// value it read before the write back in. Each shard has a generation that
// writes bump; a read fills the cache only if its shard's generation did
// not move while it read Pebble. Libraries with asynchronous sets
// (ristretto) cannot give that, and the map is all that is needed.
//
// The Redis store's near cache is the same map, filled by reads only: there
// the writes are another process's, and Redis's reports of them drop
// entries (drop, flush) and bump the generation as a write here does.
type rowCache struct {
	seed   maphash.Seed
	budget int64 // bytes per shard
	shards [rowCacheShards]rowShard
}

const rowCacheShards = 64

type rowShard struct {
	mu   sync.RWMutex
	m    map[string][]byte
	size int64
	gen  uint64

	hits, misses atomic.Uint64 // gets answered and not
}

// rowEntryOverhead approximates a map entry's own memory.
const rowEntryOverhead = 64

func newRowCache(bytes int64) *rowCache {
	c := &rowCache{seed: maphash.MakeSeed(), budget: max(bytes/rowCacheShards, 1)}
	for i := range c.shards {
		c.shards[i].m = map[string][]byte{}
	}
	return c
}

func (c *rowCache) shard(key []byte) *rowShard {
	return &c.shards[maphash.Bytes(c.seed, key)%rowCacheShards]
}

// get appends key's cached value to dst; ok is false on a miss, and gen is
// then what fill needs. With notBefore (epoch ms) not 0, a value updated
// before then (or without its update time) counts as a miss.
func (c *rowCache) get(key, dst []byte, notBefore int64) (out []byte, ok bool, gen uint64) {
	s := c.shard(key)
	s.mu.RLock()
	v, ok := s.m[string(key)]
	if ok && notBefore != 0 {
		at, known := updatedAtMs(v)
		ok = known && at >= notBefore
	}
	if ok {
		dst = append(dst, v...)
	}
	gen = s.gen
	s.mu.RUnlock()
	if ok {
		s.hits.Add(1)
	} else {
		s.misses.Add(1)
	}
	return dst, ok, gen
}

// counts sums the shards' hits and misses.
func (c *rowCache) counts() (hits, misses uint64) {
	for i := range c.shards {
		hits += c.shards[i].hits.Load()
		misses += c.shards[i].misses.Load()
	}
	return hits, misses
}

// fill caches a value read from the store, unless a write to the shard
// (or a report of one) happened since get returned gen (the value may then
// be older than the store's).
func (c *rowCache) fill(key, val []byte, gen uint64) {
	s := c.shard(key)
	s.mu.Lock()
	if s.gen == gen {
		s.put(key, val, c.budget)
	}
	s.mu.Unlock()
}

// set caches a value just committed to Pebble.
func (c *rowCache) set(key, val []byte) {
	s := c.shard(key)
	s.mu.Lock()
	s.gen++
	s.put(key, val, c.budget)
	s.mu.Unlock()
}

// drop forgets key, and makes fills of reads that began before it
// fail: the store says the key changed.
func (c *rowCache) drop(key []byte) {
	s := c.shard(key)
	s.mu.Lock()
	s.gen++
	if v, ok := s.m[string(key)]; ok {
		s.remove(string(key), v)
	}
	s.mu.Unlock()
}

// flush forgets everything, and makes fills of reads that began before it
// fail.
func (c *rowCache) flush() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.gen++
		clear(s.m)
		s.size = 0
		s.mu.Unlock()
	}
}

// put stores a copy of val under key and keeps the shard within budget.
func (s *rowShard) put(key, val []byte, budget int64) {
	if old, ok := s.m[string(key)]; ok {
		s.remove(string(key), old)
	}
	s.m[string(key)] = append([]byte(nil), val...)
	s.size += entrySize(string(key), val)
	if s.size <= budget {
		return
	}
	// Over budget: drop entries (random order) down to 90%.
	for k, v := range s.m {
		if s.size <= budget*9/10 {
			break
		}
		if k == string(key) {
			continue
		}
		s.remove(k, v)
	}
}

// remove deletes k, whose value is v.
func (s *rowShard) remove(k string, v []byte) {
	delete(s.m, k)
	s.size -= entrySize(k, v)
}

// entrySize is what an entry counts against the budget.
func entrySize(k string, v []byte) int64 { return int64(len(k) + len(v) + rowEntryOverhead) }
