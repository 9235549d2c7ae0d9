package event

import (
	"encoding/json"
	"os"
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
	// What is not text is refused: decoders would make it U+FFFD, and
	// different ids one.
	if nerr == nil && !textOK(raw) {
		t.Fatalf("raw %q holds invalid text, yet was accepted as %s", raw, out)
	}
	if nerr != nil {
		return
	}
	if !textOK(out) {
		t.Fatalf("raw %q: the record %q holds invalid text", raw, out)
	}
	checkIDsAsSent(t, raw, out)
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
	for _, b := range testdataEvents(t) {
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
	for _, b := range testdataEvents(f) {
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

func TestScanString(t *testing.T) {
	// Every byte at every position of a string long enough for the
	// eight-at-a-time loop and its tail, against encoding/json.
	f := func(in []byte) {
		t.Helper()
		s := scanner{b: in}
		_, _, ok := s.str()
		ok = ok && s.i == len(in)
		if want := json.Valid(in) && textOK(in); ok != want {
			t.Fatalf("str(%q) = %v, want %v", in, ok, want)
		}
	}
	for c := 0; c < 256; c++ {
		b := []byte(`"0123456789abcdefXY"`)
		for i := 1; i < len(b)-1; i++ {
			bb := append([]byte(nil), b...)
			bb[i] = byte(c)
			f(bb)
		}
	}
	for _, s := range []string{`""`, `"\u00e9"`, `"\u00g9"`, `"\"`, `"é"`, "\"\xff\"", "\"\xed\xa0\x80\"", `"\/\b\f\n\r\t\"\\"`, `"abc`, `"\u12"`, `"\ud800"`, `"\uDBFF\uDFFF"`, `"\ud800\u0041"`, `"\udc00"`, `"x\ud83d\ude00y"`, `"\ud83d"`, `"\ud83d\"`, `"\uD7FF"`} {
		f([]byte(s))
	}
}

// checkSameBatch asserts NormalizeBatch agrees with DecodeBatch and
// Normalize of each item.
func checkSameBatch(t *testing.T, body []byte) {
	t.Helper()
	var n Normalizer
	var got NormalizedBatch
	gerr := n.NormalizeBatch(&got, body, now, DefaultLimits)
	want, werr := DecodeBatch(body, DefaultLimits)
	if (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) {
		t.Fatalf("body %q:\nNormalizeBatch error %v\n   DecodeBatch error %v", body, gerr, werr)
	}
	if gerr != nil {
		return
	}
	if got.WriteKey != want.WriteKey || len(got.Items) != len(want.Items) {
		t.Fatalf("body %q: writeKey %q, %d items; want %q, %d", body, got.WriteKey, len(got.Items), want.WriteKey, len(want.Items))
	}
	for i, it := range got.Items {
		if string(it.Raw) != string(want.Items[i]) {
			t.Fatalf("body %q: item %d is %q, want %q", body, i, it.Raw, want.Items[i])
		}
		out, info, err := slowNormalize(nil, it.Raw, now, DefaultLimits, want.Defaults)
		if (it.Err == nil) != (err == nil) || (err != nil && err.Error() != it.Err.Error()) {
			t.Fatalf("body %q item %d: error %v, want %v", body, i, it.Err, err)
		}
		if it.Err == nil && !textOK(it.Raw) {
			t.Fatalf("body %q item %d holds invalid text, yet was accepted", body, i)
		}
		if err != nil {
			continue
		}
		checkIDsAsSent(t, it.Raw, it.Value)
		if string(it.Key) != info.EntityID || it.Type != info.Type {
			t.Fatalf("body %q item %d: key %q type %s, want %q %s", body, i, it.Key, it.Type, info.EntityID, info.Type)
		}
		a, err1 := Unmarshal(it.Value)
		b, err2 := Unmarshal(out)
		if err1 != nil || err2 != nil {
			t.Fatalf("body %q item %d: records %s / %s: %v %v", body, i, it.Value, out, err1, err2)
		}
		// Generated messageIds differ; given ones must not.
		if !strings.Contains(string(it.Raw), `"`+a.MessageID+`"`) && !strings.Contains(string(it.Raw), `"`+b.MessageID+`"`) {
			a.MessageID, b.MessageID = "", ""
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("body %q item %d:\nNormalizeBatch %s\n     Normalize %s", body, i, it.Value, out)
		}
	}
}

func batchOf(items ...string) string { return `{"batch":[` + strings.Join(items, ",") + `]}` }

func TestNormalizeBatch(t *testing.T) {
	var items []string
	for _, b := range testdataEvents(t) {
		items = append(items, string(b))
	}
	for _, body := range []string{
		batchOf(items...),
		batchOf(`{"type":"track","userId":"1","event":"a"}`, `{"type":"track","userId":"1"}`, `7`, `{"type":"page","anonymousId":"a","category":"Docs"}`),
		batchOf(`{"type":"track","userId":1e3,"event":"a"}`, `{"type":"track","userId":"1","event":"a","properties":{"x":1e400}}`),
		batchOf(`{"type":"track","userId":"\u0031","event":"a"}`, `{"type":"track","USERID":"1","event":"a"}`, `{"type":"track","userId":"1","event":"a","userId":"2"}`),
		` { "batch" : [ { "type" : "track" , "userId" : "1" , "event" : "a" , "properties" : { "a" : [ 1 , 2 ] , "s" : " x " } } ] , "sentAt" : "2026-11-22T12:00:00Z" } `,
		`{"sentAt":"2026-11-22T12:00:00Z","writeKey":"k","batch":[{"type":"track","userId":"1","event":"a","originalTimestamp":"2026-11-22T11:00:00Z"}]}`,
		`{"batch":[{"type":"track","userId":"1","event":"a"}],"context":{"ip":"1"},"integrations":{}}`,
		`{"batch":[{"type":"track","userId":"1","event":"a"}],"context":{}}`,
		`{"batch":[{"type":"track","userId":"1","event":"a","context":{"ip":"2","page":{"x":1}}},{"type":"track","userId":"1","event":"a","context":null},{"type":"track","userId":"1","event":"a","context":{}},{"type":"track","userId":"1","event":"a","context":{"\u0069p":"3"}},{"type":"track","userId":"1","event":"a","context":{"ip":"4","ip":"5"}}],"context":{"ip":"1","library":{"name":"x"}},"integrations":{"All":false}}`,
		` {"batch" : [ {"type" : "track", "userId" : "1", "event" : "a", "integrations" : { "All" : true , "Mixpanel" : [ 1 ] } } ], "context" : { "ip" : "1" , "n" : [ 1, { "a" : "b c" } ] }, "integrations" : { "All" : false , "x" : null } } `,
		`{"batch":[{"type":"track","userId":"1","event":"a","context":7}],"context":{"ip":"1"}}`,
		`{"batch":[{"type":"track","userId":"1","event":"a"}],"context":{"\u0069p":"1"}}`,
		`{"batch":[{"type":"track","userId":"1","event":"a"}],"context":{"ip":"1","ip":"2"}}`,
		`{"batch":[{"type":"track","userId":"1","event":"a"}],"context":{"n":1e400}}`,
		`{"batch":[{"type":"page","anonymousId":"a","category":"Docs"}],"context":{"ip":"1"}}`,
		`{"batch":[{"type":"track","userId":"1","event":"a"}],"context":"x"}`,
		`{"batch":[],"sentAt":"nope"}`,
		`{"batch":null}`, `{"batch":{}}`, `{"Batch":[{"type":"track","userId":"1","event":"a"}]}`, `{"batch":[],"batch":[]}`,
		`{"batch":[{"type":"track","userId":"1","event":"a"}],"writeKey":7}`,
		`{"batch":[{"type":"track","userId":"1","event":"a",}]}`, `{"batch":[01]}`, `{"batch":[]} x`, `[]`, ``,
		batchOf(`{"type":"track","userId":"1","event":"a","properties":{"p":"` + strings.Repeat("x", 33<<10) + `"}}`),
		batchOf(`{"type":"identify","userId":"1","traits":{"a":"\u00e9\n","b":"é"},"messageId":"m","timestamp":1763805600000}`),
	} {
		checkSameBatch(t, []byte(body))
	}
}

// TestNormalizeBatchFast checks that an ordinary batch takes the one-pass
// path, item by item, so that the fuzz targets test it.
func TestNormalizeBatchFast(t *testing.T) {
	body := []byte(` {"batch": [
	  {"type": "track", "messageId": "m1", "userId": "1", "event": "a", "properties": {"x": 1.5, "y": [true, null]}},
	  {"type":"identify","anonymousId":"a","traits":{"s":"\u00e9"},"timestamp":"2026-11-22T11:00:00.123Z"}
	], "sentAt": "2026-11-22T12:00:00Z", "writeKey": "k"}`)
	var n Normalizer
	var b NormalizedBatch
	if !n.fastBatch(&b, body, now, DefaultLimits) {
		t.Fatal("an ordinary batch took the reference path")
	}
	for i := range n.bs.items {
		if n.bs.items[i].slow {
			t.Fatalf("item %d took Decode's path", i)
		}
	}
	if string(b.Items[0].Value) != `{"type":"track","messageId":"m1","userId":"1","event":"a","properties":{"x":1.5,"y":[true,null]},"timestamp":"2026-11-22T12:00:00Z","sentAt":"2026-11-22T12:00:00Z","receivedAt":"2026-11-22T12:00:00Z"}` {
		t.Fatalf("record %s", b.Items[0].Value)
	}
	checkSameBatch(t, body)

	// A batch-level context is merged on the one-pass path too.
	merged := []byte(`{"batch":[{"type":"track","userId":"1","event":"a","context":{"ip":"2"}}],"context":{"ip":"1","library":{"name":"x"}}}`)
	if !n.fastBatch(&b, merged, now, DefaultLimits) || n.bs.items[0].slow {
		t.Fatal("a batch with a context took the reference path")
	}
	if got := string(b.Items[0].Value); !strings.Contains(got, `"context":{"library":{"name":"x"},"ip":"2"}`) {
		t.Fatalf("merged record %s", got)
	}
	checkSameBatch(t, merged)

	raw, err := os.ReadFile("testdata/track.json")
	if err != nil {
		t.Fatal(err)
	}
	n.s = scanner{b: raw}
	if !n.s.item(&n.it) || n.it.slow {
		t.Fatal("testdata/track.json takes Decode's path")
	}
}

func FuzzNormalizeBatch(f *testing.F) {
	var items []string
	for _, b := range testdataEvents(f) {
		items = append(items, string(b))
	}
	f.Add([]byte(batchOf(items...)))
	f.Add([]byte(`{"batch":[{"type":"track","userId":"1","event":"a"},{"type":"page","anonymousId":"x","name":"n"}],"sentAt":"2026-11-22T12:00:00Z","writeKey":"k"}`))
	f.Add([]byte(`{"batch":[{"type":"track","userId":"1","event":"a","context":{"ip":"2"}},{"type":"identify","anonymousId":"x","context":null}],"context":{"ip":"1","library":{"name":"x"}},"integrations":{"All":true}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		checkSameBatch(t, body)
	})
}

// BenchmarkNormalizeBatch is 100 events of the shape pulse loadtest ingest
// sends (~590 bytes each).
func BenchmarkNormalizeBatch(b *testing.B) {
	raw := `{"type":"track","messageId":"8c5e2f4e-5d1c-4b7e-9a51-3f0d6f2b9c11","userId":"48213","event":"Product Viewed","properties":{"product_id":"p-1234","category":"c-17","price":42.10,"revenue":84.20,"currency":"USD"},"context":{"library":{"name":"pulse-loadtest","version":"1"},"ip":"10.0.0.12","userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36","page":{"path":"/products/1234","url":"https://shop.example.com/products/1234"}}}`
	items := make([]string, 100)
	for i := range items {
		items[i] = string(raw)
	}
	body := []byte(batchOf(items...))
	var n Normalizer
	var nb NormalizedBatch
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := n.NormalizeBatch(&nb, body, now, DefaultLimits); err != nil || nb.Items[0].Err != nil {
			b.Fatal(err, nb.Items[0].Err)
		}
	}
	b.ReportMetric(float64(b.N*len(items))/b.Elapsed().Seconds(), "events/s")
}
