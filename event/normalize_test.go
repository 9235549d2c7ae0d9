package event

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// checkSame asserts Normalize and Decode agree on raw: the same error, or
// records that decode to the same event.
func checkSame(t *testing.T, raw []byte, d Defaults) {
	t.Helper()
	var n Normalizer
	out, info, nerr := n.Normalize(nil, raw, now, DefaultLimits, d)
	e, derr := Decode(raw, now, DefaultLimits, d)
	if (nerr == nil) != (derr == nil) || (nerr != nil && nerr.Error() != derr.Error()) {
		t.Fatalf("raw %q:\nNormalize error %v\n   Decode error %v", raw, nerr, derr)
	}
	if nerr != nil {
		return
	}
	got, err := Unmarshal(out)
	if err != nil {
		t.Fatalf("Normalize wrote an invalid record %s: %v", out, err)
	}
	if info.EntityID != e.EntityID() || info.Type != e.Type {
		t.Fatalf("info %+v, want %s %s", info, e.Type, e.EntityID())
	}
	// A generated messageId differs between the two; the rest must not.
	if !strings.Contains(string(raw), `"messageId"`) || e.MessageID == "" {
		got.MessageID, e.MessageID = "", ""
	}
	want, _ := e.Marshal()
	back, _ := Unmarshal(want)
	if !strings.Contains(string(raw), `"messageId"`) || back.MessageID == "" {
		back.MessageID = ""
	}
	got.MessageID, back.MessageID = "", ""
	if !reflect.DeepEqual(got, back) {
		t.Fatalf("raw %q:\nNormalize %s\n   Decode %s", raw, out, want)
	}
}

func TestNormalizeMatchesDecode(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		checkSame(t, b, Defaults{})
		checkSame(t, b, Defaults{Type: Track})
	}
	for _, raw := range []string{
		`{"type":"track","userId":1.5e3,"event":"a","properties":{"big":12345678901234567890,"s":"q\"\\\n\u0001é"}}`,
		`{"type":"track","userId":"1","event":"a","userId":"2"}`,
		`{"type":"page","anonymousId":"a","category":"Docs"}`,
		`{"type":"track","userId":"1","event":"a","properties":{}}`,
		`{"type":"track","userId":"1","event":"a","timestamp":null,"context":null}`,
		`{"action":"identify","userId":"1"}`,
		`{"type":"track","userId":"1","event":"a","timestamp":"2026-11-22T11:00:00+01:00","originalTimestamp":1763805600000}`,
		`{"type":"track","userId":"1","event":"a","category":7}`,
		"{\"type\":\"track\",\"userId\":\"\xff\",\"event\":\"a\"}",
		`{"type":"track","userId":"1","event":"a","sentAt":"2026-11-22T12:00:00Z","originalTimestamp":"2026-11-22T11:00:00Z"}`,
		`[]`, `"x"`, `{`, ``,
	} {
		checkSame(t, []byte(raw), Defaults{})
	}
	checkSame(t, []byte(`{"type":"track","userId":"1","event":"a","context":{"ip":"1"}}`), Defaults{Context: map[string]any{"app": "x"}})
}

func FuzzNormalize(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkSame(t, raw, Defaults{})
	})
}

func BenchmarkNormalize(b *testing.B) {
	raw, err := os.ReadFile("testdata/track.json")
	if err != nil {
		b.Fatal(err)
	}
	var n Normalizer
	var dst []byte
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		dst, _, err = n.Normalize(dst[:0], raw, now, DefaultLimits, Defaults{})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func TestPrintableASCII(t *testing.T) {
	f := func(s string, want bool) {
		t.Helper()
		if got := printableASCII([]byte(s)); got != want {
			t.Fatalf("printableASCII(%q) = %v, want %v", s, got, want)
		}
	}
	f("", true)
	f(`{"a":"b c~"}`, true)
	f(`{"a":"0123456789abcdef"}`, true)
	f("{\"a\":\"012345678\n\"}", false)
	f("{\"a\":\"\x7f\"}", true)
	f("{\"a\":\"é\"}", false)
	f("0123456\x1f89", false)
	f("01234567\x00", false)
	f("\x80", false)
	for c := 0; c < 256; c++ {
		b := []byte("0123456789abcdefXY")
		for i := range b {
			bb := append([]byte(nil), b...)
			bb[i] = byte(c)
			if got, want := printableASCII(bb), c >= 0x20 && c < 0x80; got != want {
				t.Fatalf("byte %#x at %d: %v, want %v", c, i, got, want)
			}
		}
	}
}
