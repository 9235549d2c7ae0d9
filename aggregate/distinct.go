package aggregate

import (
	"encoding/binary"
	"math"
	"math/bits"
	"slices"

	"github.com/cespare/xxhash/v2"
)

const (
	// distinctExact is how many distinct values a tile (or a lifetime
	// accumulator) holds exactly, as 64-bit hashes, before it becomes a
	// HyperLogLog sketch.
	distinctExact = 1000
	// hllP is the sketch precision: 2^12 one-byte registers (4 KiB),
	// standard error 1.04/sqrt(4096) ≈ 1.6%.
	hllP = 12
	hllM = 1 << hllP
	// hllMaxRank is the largest register value a 64-bit hash can give.
	hllMaxRank = 64 - hllP + 1
)

// distinct is a set of value hashes: exact (sorted) up to distinctExact,
// then a HyperLogLog sketch.
type distinct struct {
	exact  []uint64
	sketch *hll
}

func (d *distinct) add(h uint64) {
	if d.sketch != nil {
		d.sketch.add(h)
		return
	}
	i, found := slices.BinarySearch(d.exact, h)
	if found {
		return
	}
	if len(d.exact) < distinctExact {
		d.exact = slices.Insert(d.exact, i, h)
		return
	}
	d.sketch = new(hll)
	for _, x := range d.exact {
		d.sketch.add(x)
	}
	d.sketch.add(h)
	d.exact = nil
}

// hll is a HyperLogLog sketch (Flajolet et al. 2007) with the linear
// counting correction for small cardinalities.
type hll [hllM]uint8

func (s *hll) add(h uint64) {
	i := h >> (64 - hllP)
	r := uint8(bits.LeadingZeros64(h<<hllP|1<<(hllP-1))) + 1
	if r > s[i] {
		s[i] = r
	}
}

func (s *hll) merge(o *hll) {
	for i, r := range o {
		if r > s[i] {
			s[i] = r
		}
	}
}

func (s *hll) estimate() float64 {
	sum := 0.0
	zeros := 0
	for _, r := range s {
		sum += math.Ldexp(1, -int(r))
		if r == 0 {
			zeros++
		}
	}
	m := float64(hllM)
	e := 0.7213 / (1 + 1.079/m) * m * m / sum
	if e <= 2.5*m && zeros > 0 {
		e = m * math.Log(m/float64(zeros))
	}
	return math.Round(e)
}

// Hash tags keep values of different JSON types apart: "1" and 1 are
// distinct values.
const (
	tagNumber = 0xf1
	tagBool   = 0xf2
	tagOther  = 0xf3
)

// hashValue hashes a JSON value for distinct. Strings hash as themselves,
// numbers by their float64 bits (so 1 and 1.0 are one value), anything
// else by its binary encoding.
func hashValue(v any) (uint64, bool) {
	var buf [9]byte
	switch x := v.(type) {
	case nil:
		return 0, false
	case string:
		return xxhash.Sum64String(x), true
	case bool:
		buf[0] = tagBool
		if x {
			buf[1] = 1
		}
		return xxhash.Sum64(buf[:2]), true
	}
	if f, ok := number(v); ok {
		return hashNumber(f), true
	}
	b := appendValue([]byte{tagOther}, v)
	return xxhash.Sum64(b), true
}

func hashNumber(f float64) uint64 {
	if f == 0 {
		f = 0 // -0 and 0 are one value
	}
	var buf [9]byte
	buf[0] = tagNumber
	binary.LittleEndian.PutUint64(buf[1:], math.Float64bits(f))
	return xxhash.Sum64(buf[:])
}

// number converts Go numeric types (not strings or bools) to float64.
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case int32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case uint32:
		return float64(x), true
	}
	return 0, false
}

// distinctScratch is reused across Values calls.
type distinctScratch struct {
	hashes []uint64
	sketch hll
}

// union counts the distinct values across the given tiles: exactly while
// every tile is exact, else the sketch estimate.
func union(ds []*distinct, sc *distinctScratch) float64 {
	switch len(ds) {
	case 0:
		return 0
	case 1:
		if ds[0].sketch == nil {
			return float64(len(ds[0].exact))
		}
	}
	sketched := false
	for _, d := range ds {
		if d.sketch != nil {
			sketched = true
			break
		}
	}
	if sketched {
		sc.sketch = hll{}
		for _, d := range ds {
			if d.sketch != nil {
				sc.sketch.merge(d.sketch)
				continue
			}
			for _, h := range d.exact {
				sc.sketch.add(h)
			}
		}
		return sc.sketch.estimate()
	}
	// Count the union in an open-addressing set: hashes are uniform, so
	// their low bits index it directly. 0 marks an empty slot.
	total := 0
	for _, d := range ds {
		total += len(d.exact)
	}
	size := 1 << bits.Len(uint(2*total))
	if cap(sc.hashes) < size {
		sc.hashes = make([]uint64, size)
	}
	table := sc.hashes[:size]
	clear(table)
	mask := uint64(size - 1)
	n, zero := 0, false
	for _, d := range ds {
		for _, h := range d.exact {
			if h == 0 {
				zero = true
				continue
			}
			for i := h & mask; ; i = (i + 1) & mask {
				if table[i] == h {
					break
				}
				if table[i] == 0 {
					table[i] = h
					n++
					break
				}
			}
		}
	}
	if zero {
		n++
	}
	return float64(n)
}
