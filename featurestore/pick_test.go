package featurestore

import (
	"context"
	"math"
	"slices"
	"strconv"
	"testing"
)

var (
	_ RawGetter = (*Pebble)(nil)
	_ RawGetter = (*Redis)(nil)
)

// checkPicked: p is what Decode's value v (present or not) means.
func checkPicked(t *testing.T, name string, p Picked, v any, present bool) {
	t.Helper()
	if !present {
		if p.Kind != KindMissing || !math.IsNaN(p.Num) {
			t.Fatalf("%s: absent, picked %+v", name, p)
		}
		return
	}
	if !sameValue(p.Any(), v) {
		t.Fatalf("%s: picked %+v (Any %#v), Decode %#v", name, p, p.Any(), v)
	}
	want := math.NaN()
	switch x := v.(type) {
	case float64:
		want = x
	case bool:
		if want = 0; x {
			want = 1
		}
	}
	if math.Float64bits(p.Num) != math.Float64bits(want) && !(math.IsNaN(p.Num) && math.IsNaN(want)) {
		t.Fatalf("%s: Num %v, want %v", name, p.Num, want)
	}
}

func TestPickAgreesWithDecode(t *testing.T) {
	vecs := goldenVectors()
	vecs["bench"] = benchVector()
	merged := benchVector()
	merged.CanonicalID = "user-9"
	vecs["merged"] = merged
	for vn, vec := range vecs {
		b := Encode(vec, nil)
		dec, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		var all []string
		for name := range dec.Features {
			all = append(all, name)
		}
		slices.Sort(all)
		// Every subset shape: all names, each alone, reversed with an
		// unknown name and a repeat, none.
		sets := [][]string{all, {"zzz", "aaa", "nope"}, nil}
		for _, name := range all {
			sets = append(sets, []string{name})
		}
		rev := slices.Clone(all)
		slices.Reverse(rev)
		sets = append(sets, append(append(rev, "nope"), rev...))
		for _, names := range sets {
			p := NewPicker(names)
			dst := make([]Picked, len(names))
			if err := p.Pick(b, dst); err != nil {
				t.Fatalf("%s %v: %v", vn, names, err)
			}
			for i, name := range names {
				v, ok := dec.Features[name]
				checkPicked(t, vn+"/"+name, dst[i], v, ok)
			}
		}
	}
}

func TestPickErrors(t *testing.T) {
	p := NewPicker([]string{"orders_7d", "zz"})
	dst := make([]Picked, 2)
	good := Encode(goldenVectors()["user"], nil)
	for name, b := range map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{9}, good[1:]...),
		"truncated": good[:len(good)/2],
	} {
		if err := p.Pick(b, dst); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// FuzzPick: Pick never panics, and where Decode accepts the bytes Pick
// gives what Decode gives.
func FuzzPick(f *testing.F) {
	for _, v := range goldenVectors() {
		f.Add(Encode(v, nil), "orders_7d,country,last_products,address,nope")
	}
	f.Add(Encode(benchVector(), nil), "referrer,plan,orders_30d")
	f.Add([]byte{1, 0, 1, 1, 'a', 6, 1, 7, 0}, "a")
	f.Fuzz(func(t *testing.T, b []byte, list string) {
		var names []string
		for i, n := range slices.Collect(func(yield func(string) bool) {
			start := 0
			for i := 0; i <= len(list); i++ {
				if i == len(list) || list[i] == ',' {
					if !yield(list[start:i]) {
						return
					}
					start = i + 1
				}
			}
		}) {
			if i < 16 {
				names = append(names, n)
			}
		}
		p := NewPicker(names)
		dst := make([]Picked, len(names))
		perr := p.Pick(b, dst)
		dec, err := Decode(b)
		if err != nil {
			return
		}
		if perr != nil {
			t.Fatalf("Decode accepts %x, Pick says %v", b, perr)
		}
		for i, name := range names {
			v, ok := dec.Features[name]
			checkPicked(t, name, dst[i], v, ok)
		}
	})
}

// TestAppendRaw: both stores hand out the bytes Encode wrote, nil for
// unknown ids, appended after what buf held.
func TestAppendRaw(t *testing.T) {
	ctx := context.Background()
	backends := map[string]backend{
		"pebble": pebbleBackend(), "redis": redisBackend(RedisOptions{CacheSize: -1}), "redis-near": redisBackend(RedisOptions{}),
	}
	for name, b := range backends {
		t.Run(name, func(t *testing.T) {
			st := b.open(t)
			var batch []Update
			for i := range 3 {
				batch = append(batch, Update{Vector: Vector{Entity: "user", ID: strconv.Itoa(i),
					Features: map[string]any{"n": float64(i), "s": "x" + strconv.Itoa(i)}}})
			}
			if err := st.Write(ctx, batch); err != nil {
				t.Fatal(err)
			}
			rg := st.(RawGetter)
			// Twice: the second time from the caches.
			for range 2 {
				buf := []byte("prefix")
				buf, raw, err := rg.AppendRaw(ctx, "user", []string{"2", "nobody", "0"}, buf, make([][]byte, 5))
				if err != nil {
					t.Fatal(err)
				}
				if string(buf[:6]) != "prefix" || len(raw) != 3 || raw[1] != nil {
					t.Fatalf("buf %q raw %q", buf, raw)
				}
				for k, id := range map[int]string{0: "2", 2: "0"} {
					v, err := Decode(raw[k])
					if err != nil {
						t.Fatal(err)
					}
					if want := strconv.Itoa(int(v.Features["n"].(float64))); want != id {
						t.Fatalf("raw[%d] is user %s, want %s", k, want, id)
					}
				}
			}
			if _, _, err := rg.AppendRaw(ctx, "", []string{"1"}, nil, nil); err == nil {
				t.Fatal("empty entity accepted")
			}
		})
	}
}

func BenchmarkPick(b *testing.B) {
	buf := Encode(benchVector(), nil)
	p := NewPicker([]string{"orders_30d", "revenue_30d", "sessions_7d", "days_since_order", "distinct_products_30d", "cart_adds_1d"})
	dst := make([]Picked, 6)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Pick(buf, dst); err != nil {
			b.Fatal(err)
		}
	}
}
