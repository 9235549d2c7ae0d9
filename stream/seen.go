package stream

import (
	"hash/maphash"
	"math/bits"

	"github.com/cockroachdb/pebble"
)

// seenFilter is a Bloom filter over the message ids under pkSeen, so the
// dedupe of an event that was never seen (nearly all of them) costs no
// Pebble lookup. It may hold ids Pebble no longer has (purged, wiped):
// a false positive only costs the lookup the filter would have saved.
// Every id written under pkSeen must be added before a later batch asks.
type seenFilter struct {
	seed  maphash.Seed
	words []uint64
	mask  uint64 // bits - 1
	added int    // since built
}

const (
	seenFilterMinBits = 1 << 20 // 128 KiB
	seenFilterMaxBits = 1 << 27 // 16 MiB per partition; beyond, the false positive rate rises
	seenFilterBitsPer = 32      // bits per id at build: room to double before a rebuild
)

func newSeenFilter(n int) *seenFilter {
	m := max(seenFilterMinBits, min(seenFilterMaxBits, 1<<bits.Len(uint(n*seenFilterBitsPer))))
	return &seenFilter{seed: maphash.MakeSeed(), words: make([]uint64, m/64), mask: uint64(m - 1)}
}

// full reports that the filter should be rebuilt larger.
func (f *seenFilter) full() bool {
	bits := len(f.words) * 64
	return bits < seenFilterMaxBits && f.added > bits/16
}

func (f *seenFilter) add(id string) { f.addHash(maphash.String(f.seed, id)) }

func (f *seenFilter) addHash(h uint64) {
	a, b := h, h>>32|1
	for range 4 {
		f.words[(a&f.mask)>>6] |= 1 << (a & 63)
		a += b
	}
	f.added++
}

func (f *seenFilter) mayHave(id string) bool {
	h := maphash.String(f.seed, id)
	a, b := h, h>>32|1
	for range 4 {
		if f.words[(a&f.mask)>>6]&(1<<(a&63)) == 0 {
			return false
		}
		a += b
	}
	return true
}

// buildSeenFilter reads every seen id of the partition's Pebble state.
func buildSeenFilter(db *pebble.DB) (*seenFilter, error) { return buildKeyFilter(db, pkSeen) }

// iterable is a *pebble.DB or a *pebble.Snapshot.
type iterable interface {
	NewIter(*pebble.IterOptions) (*pebble.Iterator, error)
}

// buildKeyFilter is a filter of the keys under prefix, the prefix cut:
// the seen ids (pkSeen), the moved entities (pkAlias, identity.go), the
// linker's identifiers (linker_state.go).
func buildKeyFilter(db iterable, prefix []byte) (*seenFilter, error) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
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
	f := newSeenFilter(len(hs))
	f.seed = seed
	for _, h := range hs {
		f.addHash(h)
	}
	return f, nil
}
