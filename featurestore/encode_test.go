package featurestore

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestEncodeRoundTrip(t *testing.T) {
	f := func(name string, in Vector) {
		t.Helper()
		b := Encode(in, nil)
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: Decode: %v", name, err)
		}
		if c := CanonicalOf(b); c != in.CanonicalID {
			t.Fatalf("%s: CanonicalOf %q, want %q", name, c, in.CanonicalID)
		}
		assertVector(t, name, got, in)
		if again := Encode(got, nil); !bytes.Equal(again, b) {
			t.Fatalf("%s: re-encoding differs:\n%x\n%x", name, again, b)
		}
	}
	at := time.UnixMilli(1_760_000_000_123).UTC()
	f("empty", Vector{})
	f("times only", Vector{UpdatedAt: at, EventAt: at.Add(-time.Second)})
	f("merged into another", Vector{UpdatedAt: at, CanonicalID: "user-9", Features: map[string]any{"n": 0.0}})
	f("epoch is not zero", Vector{UpdatedAt: time.UnixMilli(0).UTC()})
	f("before epoch", Vector{UpdatedAt: time.UnixMilli(-86_400_000).UTC()})
	f("all types", Vector{
		UpdatedAt: at,
		Features: map[string]any{
			"count":    12.0,
			"zero":     0.0,
			"negzero":  math.Copysign(0, -1),
			"neg":      -3.0,
			"avg":      12.75,
			"big":      1e300,
			"edge":     float64(maxExactInt),
			"below":    float64(maxExactInt - 1),
			"nan":      math.NaN(),
			"inf":      math.Inf(-1),
			"country":  "FR",
			"empty":    "",
			"unicode":  "héllo ✓",
			"missing":  nil,
			"last_n":   []any{"a", 1.0, nil, []any{2.5}},
			"no_items": []any{},
			"flag":     true,
			"off":      false,
			"object":   map[string]any{"b": 1.0, "a": []any{"x"}, "c": map[string]any{}},
		},
		Segments: []string{"big_spenders", "churn_risk"},
	})
}

func TestEncodeNormalises(t *testing.T) {
	in := Vector{Features: map[string]any{
		"int": 3, "int64": int64(-4), "uint8": uint8(5), "float32": float32(0.5),
		"strings": []string{"a", "b"}, "time": time.Now(), "struct": struct{}{},
	}}
	got, err := Decode(Encode(in, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"int": 3.0, "int64": -4.0, "uint8": 5.0, "float32": 0.5,
		"strings": []any{"a", "b"}, "time": nil, "struct": nil,
	}
	if !reflect.DeepEqual(got.Features, want) {
		t.Fatalf("got %#v\nwant %#v", got.Features, want)
	}
}

// TestEncodeCompact guards the size: small whole numbers take 2 bytes, not 9.
func TestEncodeCompact(t *testing.T) {
	v := benchVector()
	b := Encode(v, nil)
	names := 0
	for n := range v.Features {
		names += len(n)
	}
	t.Logf("25-feature vector: %d bytes (%d of them feature names)", len(b), names)
	if len(b) > names+260 {
		t.Fatalf("25-feature vector takes %d bytes, %d besides its names", len(b), len(b)-names)
	}
	if got := len(Encode(Vector{Features: map[string]any{"n": 100.0}}, nil)); got != 1+1+1+2+1+2+1 {
		t.Fatalf("one small count takes %d bytes", got)
	}
}

func TestDecodeVersions(t *testing.T) {
	v1 := Encode(Vector{Features: map[string]any{"n": 1.0}}, nil)
	for _, version := range []byte{0, 2, 3, 0xff} {
		b := append([]byte{version}, v1[1:]...)
		_, err := Decode(b)
		if !errors.Is(err, ErrUnknownVersion) {
			t.Errorf("version %d: err %v, want ErrUnknownVersion", version, err)
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprint(version)) {
			t.Errorf("version %d: error %q does not name it", version, err)
		}
	}
}

// TestDecodeGolden reads vectors encoded by earlier builds: stored values
// must stay readable as long as their version is supported. A file is
// <name>.hex (the value) and <name>.want (the decoded vector, %#v of its
// parts). Set PULSE_UPDATE_GOLDEN=1 to write missing files from goldenVectors.
func TestDecodeGolden(t *testing.T) {
	for name, v := range goldenVectors() {
		hexPath := filepath.Join("testdata", "v1_"+name+".hex")
		if os.Getenv("PULSE_UPDATE_GOLDEN") != "" {
			if _, err := os.Stat(hexPath); errors.Is(err, os.ErrNotExist) {
				os.MkdirAll("testdata", 0o755)
				if err := os.WriteFile(hexPath, []byte(hex.EncodeToString(Encode(v, nil))+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		raw, err := os.ReadFile(hexPath)
		if err != nil {
			t.Fatal(err)
		}
		b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		assertVector(t, name, got, v)
	}
}

func goldenVectors() map[string]Vector {
	return map[string]Vector{
		"user": {
			UpdatedAt: time.UnixMilli(1_760_000_000_123).UTC(),
			EventAt:   time.UnixMilli(1_760_000_000_001).UTC(),
			Features: map[string]any{
				"orders_7d": 3.0, "revenue_30d": 129.5, "country": "FR",
				"last_products": []any{"sku-1", "sku-2"}, "plan": nil, "vip": true,
				"address": map[string]any{"city": "Lyon"}, "delta": -2.0,
			},
			Segments: []string{"active", "big_spenders"},
		},
		"empty": {},
	}
}

func TestDecodeErrors(t *testing.T) {
	good := Encode(Vector{
		UpdatedAt: time.UnixMilli(5),
		Features:  map[string]any{"a": 1.5, "b": []any{"x"}},
		Segments:  []string{"s"},
	}, nil)
	f := func(name string, b []byte) {
		t.Helper()
		if v, err := Decode(b); err == nil {
			t.Errorf("%s: decoded %x as %+v, want an error", name, b, v)
		}
	}
	f("nil", nil)
	for n := 1; n < len(good); n++ {
		f(fmt.Sprintf("truncated to %d", n), good[:n])
	}
	f("trailing byte", append(append([]byte{}, good...), 0))
	f("unknown flag", []byte{1, 4, 0, 0})
	f("unknown tag", []byte{1, 0, 1, 1, 'a', 99, 0})
	f("huge count", []byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f("varint overflow", []byte{1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0})
	f("duplicate feature", []byte{1, 0, 2, 1, 'a', 0, 1, 'a', 0, 0})
	f("inexact int", append([]byte{1, 0, 1, 1, 'a', tagInt}, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 0))
	deep := []byte{1, 0, 1, 1, 'a'}
	for range maxDepth + 2 {
		deep = append(deep, tagList, 1)
	}
	deep = append(deep, tagNil, 0)
	f("too deep", deep)
}

func FuzzDecode(f *testing.F) {
	for _, v := range goldenVectors() {
		f.Add(Encode(v, nil))
	}
	f.Add(Encode(benchVector(), nil))
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := Decode(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to a value that decodes to the same
		// thing (compared as bytes, which also works for NaN).
		e1 := Encode(v, nil)
		v2, err := Decode(e1)
		if err != nil {
			t.Fatalf("re-encoded %x does not decode: %v", e1, err)
		}
		if e2 := Encode(v2, nil); !bytes.Equal(e1, e2) {
			t.Fatalf("encoding is not stable:\n%x\n%x", e1, e2)
		}
	})
}

// assertVector compares vectors as users see them: times by instant,
// floats by bits (NaN equals NaN).
func assertVector(t *testing.T, name string, got, want Vector) {
	t.Helper()
	if got.Entity != want.Entity || got.ID != want.ID {
		t.Errorf("%s: entity %s/%s, want %s/%s", name, got.Entity, got.ID, want.Entity, want.ID)
	}
	if got.CanonicalID != want.CanonicalID {
		t.Errorf("%s: canonical id %q, want %q", name, got.CanonicalID, want.CanonicalID)
	}
	if !got.UpdatedAt.Equal(want.UpdatedAt) || !got.EventAt.Equal(want.EventAt) {
		t.Errorf("%s: times %v/%v, want %v/%v", name, got.UpdatedAt, got.EventAt, want.UpdatedAt, want.EventAt)
	}
	if len(got.Features) != len(want.Features) {
		t.Errorf("%s: %d features, want %d", name, len(got.Features), len(want.Features))
	}
	for k, w := range want.Features {
		g, ok := got.Features[k]
		if !ok || !sameValue(g, w) {
			t.Errorf("%s: feature %s = %#v, want %#v", name, k, g, w)
		}
	}
	if !reflect.DeepEqual(got.Segments, want.Segments) && (len(got.Segments) != 0 || len(want.Segments) != 0) {
		t.Errorf("%s: segments %q, want %q", name, got.Segments, want.Segments)
	}
}

func sameValue(a, b any) bool {
	fa, ok1 := a.(float64)
	fb, ok2 := b.(float64)
	if ok1 && ok2 {
		return math.Float64bits(fa) == math.Float64bits(fb)
	}
	la, ok1 := a.([]any)
	lb, ok2 := b.([]any)
	if ok1 && ok2 {
		if len(la) != len(lb) {
			return false
		}
		for i := range la {
			if !sameValue(la[i], lb[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

// benchVector is a typical 25-feature user: counts, sums, averages,
// a few strings, two last_n lists and a missing value.
func benchVector() Vector {
	at := time.UnixMilli(1_760_000_000_123).UTC()
	feats := map[string]any{
		"orders_7d": 3.0, "orders_30d": 11.0, "orders_lifetime": 87.0,
		"revenue_7d": 129.5, "revenue_30d": 512.25, "revenue_lifetime": 4210.8,
		"avg_order_30d": 46.57, "max_order_30d": 180.0, "min_order_30d": 9.99,
		"sessions_1d": 2.0, "sessions_7d": 14.0, "page_views_1h": 6.0,
		"page_views_1d": 41.0, "distinct_products_30d": 23.0, "cart_adds_1d": 1.0,
		"first_seen": 1.69e12, "last_seen": 1.760000000123e12, "days_since_order": 2.0,
		"country": "FR", "plan": "pro", "last_device": "ios",
		"last_products":   []any{"sku-1842", "sku-77", "sku-901", "sku-12", "sku-3"},
		"last_categories": []any{"shoes", "bags", "shoes"},
		"referrer":        nil, "churn_score": 0.1342,
	}
	return Vector{Entity: "user", ID: "612", Features: feats,
		Segments: []string{"active_7d", "big_spenders", "ios_users"}, UpdatedAt: at, EventAt: at.Add(-40 * time.Millisecond)}
}

func BenchmarkEncode(b *testing.B) {
	v := benchVector()
	buf := Encode(v, nil)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = Encode(v, buf[:0])
	}
}

func BenchmarkDecode(b *testing.B) {
	buf := Encode(benchVector(), nil)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// Encode writes the features sorted whichever vectors came before it:
// it reuses the order of the last vector's names only when the names are
// the same.
func TestEncodeNamesOrder(t *testing.T) {
	sets := [][]string{
		{"b", "a", "c"},
		{"a", "b", "c"},
		{"a", "b", "d"}, // as many, one different
		{"a", "b"},
		{},
		{"z", "y", "x", "a", "b", "c"},
		{"a", "b", "c"},
	}
	at := time.UnixMilli(1_700_000_000_000)
	for round := range 3 {
		for i, names := range sets {
			f := map[string]any{}
			for k, n := range names {
				f[n] = float64(k + round)
			}
			v := Vector{Entity: "user", ID: "u", Features: f, UpdatedAt: at}
			prev := lastNames.Load()
			lastNames.Store(nil)
			want := Encode(v, nil)
			lastNames.Store(prev) // as the vectors before left it
			got := Encode(v, nil)
			if string(got) != string(want) {
				t.Fatalf("round %d set %d %v: after the others %x, fresh %x", round, i, names, got, want)
			}
			back, err := Decode(got)
			if err != nil || !reflect.DeepEqual(back.Features, v.Features) && len(names) > 0 {
				t.Fatalf("round %d set %d: %v %v", round, i, back.Features, err)
			}
		}
	}
}
