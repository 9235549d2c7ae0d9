package aggregate

import (
	"encoding/binary"
	"fmt"
)

// SeedCut says up to which input offset of its partition a seed's state of
// one feature (by fingerprint) goes: it holds the events before Cut but for
// those with a copy (same messageId) at an offset in [Cut, Seen), which the
// history held when the seed was made; the stream counts those.
type SeedCut struct {
	Fingerprint uint64
	Cut, Seen   int64
}

// The value of a seed record (a backfilled partial State for the stream):
//
//	byte     version (1)
//	uvarint  number of cuts, then for each: 8 bytes fingerprint (LE), varint cut, varint seen
//	bytes    the State, as AppendBinary writes it
const seedVersion = 1

// AppendSeed appends a seed value: st's state of the features cuts names.
func AppendSeed(dst []byte, cuts []SeedCut, st *State) []byte {
	dst = append(dst, seedVersion)
	dst = binary.AppendUvarint(dst, uint64(len(cuts)))
	for _, c := range cuts {
		dst = binary.LittleEndian.AppendUint64(dst, c.Fingerprint)
		dst = binary.AppendVarint(dst, c.Cut)
		dst = binary.AppendVarint(dst, c.Seen)
	}
	return st.AppendBinary(dst)
}

// DecodeSeed splits a seed value into its cuts and its State's encoding
// (for DecodeState of any Set holding those features).
func DecodeSeed(b []byte) (cuts []SeedCut, state []byte, err error) {
	r := reader{b: b}
	if v := r.byte(); v != seedVersion && r.err == nil {
		return nil, nil, fmt.Errorf("cannot decode seed: unknown version %d", v)
	}
	n := r.count(10)
	for i := 0; i < n && r.err == nil; i++ {
		cuts = append(cuts, SeedCut{Fingerprint: r.uint64(), Cut: r.varint(), Seen: r.varint()})
	}
	if r.err != nil {
		return nil, nil, fmt.Errorf("cannot decode seed: %w", r.err)
	}
	return cuts, r.b, nil
}
