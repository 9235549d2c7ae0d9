// Package keyfilter is a Bloom filter over the keys of a Pebble key range,
// so a lookup of a key that was never written (nearly all of them, for
// the stream's seen message ids, its moved entities and the identity
// linker's identifiers) costs no Pebble read. A filter may hold keys
// Pebble no longer has (deleted, a batch dropped): a false positive only
// costs the lookup it would have saved. Every key written must be added
// before a later lookup asks.
//
// Not safe for concurrent use.
package keyfilter

import (
	"hash/maphash"
	"math/bits"

	"github.com/cockroachdb/pebble"
)

// Filter is the Bloom filter: four probes per key.
type Filter struct {
	seed  maphash.Seed
	words []uint64
	mask  uint64 // bits - 1
	added int    // since built
}

const (
	minBits = 1 << 20 // 128 KiB
	maxBits = 1 << 27 // 16 MiB; beyond, the false positive rate rises
	bitsPer = 32      // bits per key at build: room to double before a rebuild
)

// New returns a filter sized for n keys (and as many again).
func New(n int) *Filter {
	m := max(minBits, min(maxBits, 1<<bits.Len(uint(n*bitsPer))))
	return &Filter{seed: maphash.MakeSeed(), words: make([]uint64, m/64), mask: uint64(m - 1)}
}

// Full reports that the filter should be rebuilt larger.
func (f *Filter) Full() bool {
	bits := len(f.words) * 64
	return bits < maxBits && f.added > bits/16
}

// Bits is the filter's size in bits.
func (f *Filter) Bits() int { return len(f.words) * 64 }

// Added is how many keys were added since it was built.
func (f *Filter) Added() int { return f.added }

// Add adds a key.
func (f *Filter) Add(key string) { f.addHash(maphash.String(f.seed, key)) }

func (f *Filter) addHash(h uint64) {
	a, b := h, h>>32|1
	for range 4 {
		f.words[(a&f.mask)>>6] |= 1 << (a & 63)
		a += b
	}
	f.added++
}

// MayHave reports whether key may have been added; false is certain.
func (f *Filter) MayHave(key string) bool {
	h := maphash.String(f.seed, key)
	a, b := h, h>>32|1
	for range 4 {
		if f.words[(a&f.mask)>>6]&(1<<(a&63)) == 0 {
			return false
		}
		a += b
	}
	return true
}

// Iterable is a *pebble.DB, a *pebble.Snapshot or a *pebble.Batch.
type Iterable interface {
	NewIter(*pebble.IterOptions) (*pebble.Iterator, error)
}

// Build is a filter of the keys of db under prefix, the prefix cut.
func Build(db Iterable, prefix []byte) (*Filter, error) {
	upper := append([]byte(nil), prefix...)
	upper[len(upper)-1]++ // prefixes end below 0xff
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	seed := maphash.MakeSeed()
	var hs []uint64
	for it.First(); it.Valid(); it.Next() {
		hs = append(hs, maphash.Bytes(seed, it.Key()[len(prefix):]))
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	f := New(len(hs))
	f.seed = seed
	for _, h := range hs {
		f.addHash(h)
	}
	return f, nil
}
