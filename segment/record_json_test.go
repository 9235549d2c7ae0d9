package segment

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	stdjson "encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"
)

// randomValue is a feature value as the stream makes them, and some it
// does not.
func randomValue(rng *rand.Rand, depth int) any {
	n := 9
	if depth > 2 {
		n = 5
	}
	switch rng.IntN(n) {
	case 0:
		return nil
	case 1:
		return randomFloat(rng)
	case 2:
		return randomString(rng)
	case 3:
		return rng.IntN(2) == 0
	case 4:
		return float64(rng.IntN(1000))
	case 5:
		l := make([]any, rng.IntN(4))
		for i := range l {
			l[i] = randomValue(rng, depth+1)
		}
		return l
	case 6:
		m := map[string]any{}
		for range rng.IntN(4) {
			m[randomString(rng)] = randomValue(rng, depth+1)
		}
		return m
	case 7:
		return []string{randomString(rng), randomString(rng)}
	default:
		// Neither: json.Marshal's own form.
		return []any{int64(rng.IntN(100)), map[string]float64{"a": 1.5}, []int{1, 2}, json.Number("12.5")}[rng.IntN(4)]
	}
}

func randomFloat(rng *rand.Rand) float64 {
	switch rng.IntN(6) {
	case 0:
		return rng.NormFloat64() * math.Pow(10, float64(rng.IntN(50)-25))
	case 1:
		return math.Float64frombits(rng.Uint64()&^(0x7ff<<52) | uint64(rng.IntN(0x7ff))<<52) // any finite
	case 2:
		return []float64{0, math.Copysign(0, -1), 1e-6, 1e-7, 9.99999e-7, 1e20, 1e21, 123456789e13, math.MaxFloat64, math.SmallestNonzeroFloat64}[rng.IntN(10)]
	default:
		return math.Round(rng.Float64()*1e6) / 100
	}
}

func randomString(rng *rand.Rand) string {
	const alphabet = "ab_Z09 \"\\/<>&\n\r\t\b\f\x00\x1f\x7fé€\u2028\u2029😀\xff\xc3"
	rs := []rune(alphabet)
	var b strings.Builder
	for range rng.IntN(8) {
		if rng.IntN(10) == 0 {
			b.WriteByte(byte(rng.IntN(256))) // anything, invalid UTF-8 too
			continue
		}
		b.WriteRune(rs[rng.IntN(len(rs))])
	}
	return b.String()
}

func randomRecord(rng *rand.Rand) Record {
	at := time.UnixMilli(rng.Int64N(4e12)).UTC().Add(time.Duration(rng.IntN(1e6)))
	var feats map[string]any
	if rng.IntN(5) > 0 {
		feats = map[string]any{}
		for range rng.IntN(30) {
			feats[randomString(rng)] = randomValue(rng, 0)
		}
	}
	return NewRecord(Change{Segment: randomString(rng), Enter: rng.IntN(2) == 0}, randomString(rng), randomString(rng), at,
		randomString(rng), feats)
}

// checkEncode holds Encode to json.Marshal's bytes, and both to one record.
func checkEncode(t *testing.T, r Record) {
	t.Helper()
	got, err := r.Encode()
	want, werr := json.Marshal(&r)
	if (err != nil) != (werr != nil) {
		t.Fatalf("%#v: Encode error %v, json.Marshal %v", r, err, werr)
	}
	if err != nil {
		names := slices.Collect(maps.Keys(r.Features))
		vals := make([]any, len(names))
		for i, n := range names {
			vals[i] = r.Features[n]
		}
		if _, ok := NewFeatures(names).Append(nil, vals); ok && len(names) > 0 && r.At.Year() <= 9999 {
			t.Fatalf("%#v: Features.Append took what json.Marshal refuses", r)
		}
		return
	}
	if string(got) != string(want) {
		t.Fatalf("%#v:\nEncode       %s\njson.Marshal %s", r, got, want)
	}
	// The same from the values in the order of their names.
	names := slices.Collect(maps.Keys(r.Features))
	rng := rand.New(rand.NewPCG(uint64(len(names)), 3))
	rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	vals := make([]any, len(names))
	for i, n := range names {
		vals[i] = r.Features[n]
	}
	feats, ok := NewFeatures(names).Append(nil, vals)
	if !ok {
		t.Fatalf("%#v: Features.Append failed", r)
	}
	if with, err := r.EncodeWith(feats); err != nil || string(with) != string(want) {
		t.Fatalf("%#v:\nEncodeWith   %s (%v)\njson.Marshal %s", r, with, err, want)
	}
	if !stdjson.Valid(got) {
		t.Fatalf("not JSON: %s", got)
	}
	a, err := DecodeRecord(got)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := DecodeRecord(want)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("decoded differ:\n%#v\n%#v", a, b)
	}
}

// TestRecordEncodeMatchesMarshal: Encode writes what json.Marshal of the
// Record writes, for the values features take and any others.
func TestRecordEncodeMatchesMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for range 20000 {
		checkEncode(t, randomRecord(rng))
	}
	at := time.Date(2024, 1, 1, 10, 0, 0, 123e6, time.UTC)
	f := func(feats map[string]any) {
		t.Helper()
		checkEncode(t, NewRecord(Change{Segment: "s", Enter: true}, "user", "u1", at, "c", feats))
	}
	f(nil)
	f(map[string]any{})
	// A deleted person's exit carries its reason, before the features.
	del := NewRecord(Change{Segment: "s"}, "user", "u1", at, "forget/d1", map[string]any{"x": 1.0})
	del.Reason = ReasonDeleted
	checkEncode(t, del)
	f(map[string]any{"nan": math.NaN()}) // json.Marshal's error
	f(map[string]any{"inf": []any{math.Inf(1)}})
	f(map[string]any{"nil map": map[string]any(nil), "nil list": []any(nil), "nil strings": []string(nil)})
	f(map[string]any{"ch": make(chan int)})
	f(map[string]any{"nested": map[string]any{"b": map[string]any{"z": 1.0, "a": []any{"<x>", 2.5e-9}}}})
	// A name twice: once, with its last value, as the map the stream
	// fills from the same names holds it.
	names, vals := []string{"b", "a", "b", "c", "a"}, []any{1.0, 2.0, 3.0, 4.0, 5.0}
	m := map[string]any{}
	for i, n := range names {
		m[n] = vals[i]
	}
	want, _ := json.Marshal(m)
	if got, ok := NewFeatures(names).Append(nil, vals); !ok || string(got) != string(want) {
		t.Fatalf("names twice: %s, want %s", got, want)
	}
	// Times json.Marshal refuses or writes with an offset.
	checkEncode(t, Record{At: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)})
	checkEncode(t, Record{At: time.Date(2024, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 3600))})
	checkEncode(t, Record{At: time.Date(2024, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 0))})
	checkEncode(t, Record{})
}

func FuzzRecordEncode(f *testing.F) {
	f.Add("u1", "revenue", 12.5, "US", true)
	f.Add("a\u2028<b>", "\xff", 1e-7, "\"\\\x00", false)
	f.Fuzz(func(t *testing.T, id, key string, num float64, s string, flag bool) {
		at := time.UnixMilli(1_700_000_000_000).UTC()
		checkEncode(t, NewRecord(Change{Segment: key, Enter: flag}, "user", id, at, s, map[string]any{
			key: num, s: s, id: []any{num, s, flag, nil, map[string]any{key: s}}, "l": []string{s, key},
		}))
	})
}

// BenchmarkRecordEncode: a record of the example config's vector (30
// features, a list, a map of traits), as the stream writes per change.
//
//	go test ./segment -run '^$' -bench RecordEncode
func BenchmarkRecordEncode(b *testing.B) {
	feats := map[string]any{}
	for i := range 24 {
		feats[fmt.Sprintf("feature_%02d", i)] = float64(i) * 12.25
	}
	feats["country"] = "DE"
	feats["recent_categories"] = []any{"shoes", "bags", "hats"}
	feats["profile_traits"] = map[string]any{"plan": "pro", "email": "a@example.com"}
	feats["rfm_group"] = "champions"
	feats["rfm_previous_group"] = nil
	feats["churn_risk"] = 0.123456789
	r := NewRecord(Change{Segment: "rfm:champions", Enter: true}, "user", "user-123456", time.UnixMilli(1_700_000_000_123).UTC(),
		"pulse.events/3/123456", feats)
	// The stream's path: the features from values in name order, once per
	// entity, then each change's record.
	names := slices.Sorted(maps.Keys(feats))
	vals := make([]any, len(names))
	for i, n := range names {
		vals[i] = feats[n]
	}
	fe := NewFeatures(names)
	var buf []byte
	encodeWith := func() ([]byte, error) {
		buf, _ = fe.Append(buf[:0], vals)
		return r.EncodeWith(buf)
	}
	for _, arm := range []struct {
		name string
		enc  func() ([]byte, error)
	}{{"Encode", r.Encode}, {"Features+EncodeWith", encodeWith}, {"json.Marshal", func() ([]byte, error) { return json.Marshal(&r) }}} {
		b.Run(arm.name, func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				v, err := arm.enc()
				if err != nil {
					b.Fatal(err)
				}
				n = len(v)
			}
			b.SetBytes(int64(n))
		})
	}
}

// changeID is the hash it always was: consumers dedupe on it across
// builds.
func TestChangeIDStable(t *testing.T) {
	was := func(parts ...string) string {
		h := sha256.New()
		h.Write([]byte("pulse.segments/v1"))
		var n [binary.MaxVarintLen64]byte
		for _, p := range parts {
			h.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
			h.Write([]byte(p))
		}
		var sum [sha256.Size]byte
		return hex.EncodeToString(h.Sum(sum[:0])[:16])
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for range 1000 {
		parts := []string{randomString(rng), "user", randomString(rng), "enter", strings.Repeat(randomString(rng), rng.IntN(100))}
		if got, want := changeID(parts...), was(parts...); got != want {
			t.Fatalf("changeID(%q) = %s, was %s", parts, got, want)
		}
	}
}
