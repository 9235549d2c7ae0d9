package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// encodingVersion is the first byte of an encoded Membership.
//
// Version 1 layout:
//
//	byte      1
//	8 bytes   Set.Fingerprint of the Set that wrote it, little endian
//	uvarint   n, the number of segments the entity is in
//	n×8 bytes the FNV-1a 64 hash of each such segment's name, little endian
//
// An entity in no segment takes 10 bytes, each membership 8 more.
const encodingVersion = 1

// AppendMembership appends m's encoding to b. Segments are keyed by a hash
// of their name, so the encoding stays readable after segments are added,
// removed or reordered.
func (s *Set) AppendMembership(b []byte, m Membership) []byte {
	b = append(b, encodingVersion)
	b = binary.LittleEndian.AppendUint64(b, s.fp)
	n := 0
	for i := range s.segs {
		if m.Has(i) {
			n++
		}
	}
	b = binary.AppendUvarint(b, uint64(n))
	for i := range s.segs {
		if m.Has(i) {
			b = binary.LittleEndian.AppendUint64(b, s.segs[i].hash)
		}
	}
	return b
}

var errShort = errors.New("segment: membership encoding truncated")

// MembershipLen is the length of the membership encoding (AppendMembership)
// at the start of b, so a caller can keep more after it: 0 for an empty b.
func MembershipLen(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if b[0] != encodingVersion {
		return 0, fmt.Errorf("segment: unknown membership encoding version %d", b[0])
	}
	if len(b) < 9 {
		return 0, errShort
	}
	n, k := binary.Uvarint(b[9:])
	if k <= 0 || n > uint64(len(b)-9-k)/8 {
		return 0, errShort
	}
	return 9 + k + 8*int(n), nil
}

// DecodeMembership reads an encoding made by AppendMembership of this or an
// earlier Set, reusing dst's memory. Members of segments this Set no longer
// has are dropped. stale reports that the encoding was made with different
// segments or rules (or b is empty: nothing was stored): the caller must
// Eval the entity and Diff against m before trusting m, so changed rules
// re-evaluate existing members and new segments find theirs.
func (s *Set) DecodeMembership(b []byte, dst Membership) (m Membership, stale bool, err error) {
	m = sized(dst, len(s.segs))
	if len(b) == 0 {
		return m, true, nil
	}
	if b[0] != encodingVersion {
		return m, true, fmt.Errorf("segment: unknown membership encoding version %d", b[0])
	}
	if len(b) < 9 {
		return m, true, errShort
	}
	fp := binary.LittleEndian.Uint64(b[1:])
	n, k := binary.Uvarint(b[9:])
	if k <= 0 {
		return m, true, errShort
	}
	rest := b[9+k:]
	if n != uint64(len(rest))/8 || len(rest)%8 != 0 {
		return m, true, fmt.Errorf("segment: membership encoding holds %d bytes for %d segments", len(rest), n)
	}
	for ; len(rest) > 0; rest = rest[8:] {
		if i, ok := s.byHash[binary.LittleEndian.Uint64(rest)]; ok {
			m.set(i)
		}
	}
	return m, fp != s.fp, nil
}
