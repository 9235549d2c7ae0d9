package history

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	json "github.com/goccy/go-json"
)

// FuzzDecodeKeys: decoding some keys of a stored map gives those keys of
// the whole map as decodeMap reads it. (Of invalid JSON, which the writer
// never stores, the keys may still be read.)
func FuzzDecodeKeys(f *testing.F) {
	for _, s := range []string{
		`{"revenue":12.5,"product_id":"p1","currency":"USD"}`, `{}`, ` { } `, `{"a":null,"b":true,"c":false}`,
		`{"revenue":{"b":[1,"}"]},"a":2}`, `{"a":"x\"y","revenue":"\u00e9"}`, `{"rev\u0065nue":1}`, `{"revenue":1,"revenue":2}`,
		`{"x":[{"revenue":3}],"product_id":[1,2]}`, `{"revenue": 01}`, `{"revenue":1e400}`, "{\"product_id\":\"\xff\"}",
		`{"a":{"revenue":1}}`, `{"revenue":tru}`, `{"revenue":1} x`,
	} {
		f.Add(s)
	}
	keys := []string{"revenue", "product_id"}
	m := map[string]any{"revenue": "stale"}
	d := newKeyDecoder()
	f.Fuzz(func(t *testing.T, s string) {
		var valid map[string]any
		if json.Unmarshal([]byte(s), &valid) != nil {
			return
		}
		full := decodeMap(s)
		want := map[string]any{}
		for _, k := range keys {
			if v, ok := full[k]; ok {
				want[k] = v
			}
		}
		got := d.decode(s, keys, m)
		if len(want) == 0 {
			if got != nil {
				t.Fatalf("decode(%q) = %#v, want nil", s, got)
			}
			return
		}
		if fmt.Sprintf("%#v", sortedMap(got)) != fmt.Sprintf("%#v", sortedMap(want)) {
			t.Fatalf("decode(%q) = %#v, decodeMap's keys %#v", s, got, want)
		}
	})
}

// FuzzShortDecimal: the fast path of number decoding answers exactly what
// strconv.ParseFloat answers for a JSON number, or steps aside.
func FuzzShortDecimal(f *testing.F) {
	for _, s := range []string{"0", "-0", "12.34", "99.99", "0.1", "-1.5", "123456789012345", "1234567890123456",
		"0.000000000000001", "01", "1.", ".5", "-", "1e5", "1.2.3", "00", "-01.5", "9007199254740993"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := shortDecimal(s)
		if !ok {
			return
		}
		want, err := strconv.ParseFloat(s, 64)
		if err != nil || !jsonNumber(s) {
			t.Fatalf("shortDecimal(%q) = %v, but it is no JSON number (%v)", s, got, err)
		}
		if math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("shortDecimal(%q) = %v, strconv %v", s, got, want)
		}
	})
}

// TestShardSort: the integer sort of an entity's keys gives the order of
// the comparison, with ties in time and times spanning any range.
func TestShardSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var s shard
	for _, span := range []int64{1, 3, 1000, 1 << 40, math.MaxInt64} {
		for _, n := range []int{2, 3, 17, 300} {
			keys := make([]sortKey, n)
			for i := range keys {
				keys[i] = sortKey{ts: rng.Int64N(span) - span/2, recv: rng.Int64N(3), hash: uint64(rng.IntN(4)), row: int32(i)}
			}
			if span == math.MaxInt64 {
				keys[0].ts, keys[1].ts = math.MinInt64, math.MaxInt64
			}
			order := func(a, b sortKey) int {
				return cmp.Or(cmp.Compare(a.ts, b.ts), cmp.Compare(a.recv, b.recv), cmp.Compare(a.hash, b.hash), cmp.Compare(a.row, b.row))
			}
			want := slices.Clone(keys)
			slices.SortFunc(want, order)
			s.sort(keys, order)
			if !slices.Equal(keys, want) {
				t.Fatalf("span %d, %d keys:\n got %v\nwant %v", span, n, keys, want)
			}
		}
	}
}
