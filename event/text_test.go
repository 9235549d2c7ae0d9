package event

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// textOK is the tests' own reading of "every string is Unicode text",
// written apart from IsText: valid UTF-8, and each \u escape of a
// surrogate a high half directly followed by a low one. Backslashes occur
// only inside strings in valid JSON, so strings need not be found.
func textOK(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			continue
		}
		if b[i+1] != 'u' || i+6 > len(b) {
			i++
			continue
		}
		var r rune
		if _, err := fmtSscanHex(string(b[i+2:i+6]), &r); err != nil {
			i++
			continue
		}
		switch {
		case r >= 0xdc00 && r <= 0xdfff:
			return false
		case r >= 0xd800 && r <= 0xdbff:
			var lo rune
			if i+12 > len(b) || b[i+6] != '\\' || b[i+7] != 'u' {
				return false
			}
			if _, err := fmtSscanHex(string(b[i+8:i+12]), &lo); err != nil || lo < 0xdc00 || lo > 0xdfff {
				return false
			}
			i += 11
		default:
			i += 5
		}
	}
	return true
}

func fmtSscanHex(s string, r *rune) (int, error) {
	var v rune
	for _, c := range s {
		v <<= 4
		switch {
		case '0' <= c && c <= '9':
			v |= c - '0'
		case 'a' <= c && c <= 'f':
			v |= c - 'a' + 10
		case 'A' <= c && c <= 'F':
			v |= c - 'A' + 10
		default:
			return 0, errNotHex
		}
	}
	*r = v
	return 1, nil
}

var errNotHex = &FieldError{Reason: "not hex"}

// checkIDsAsSent asserts what an accepted event's record holds for its
// ids: an integer is kept digit for digit. ids is what encoding/json
// (with UseNumber) reads from raw.
func checkIDsAsSent(t *testing.T, raw, record []byte) {
	t.Helper()
	var sent, kept map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if d.Decode(&sent) != nil {
		return
	}
	if err := json.Unmarshal(record, &kept); err != nil {
		t.Fatalf("record %s: %v", record, err)
	}
	for _, f := range []string{"userId", "anonymousId", "previousId", "groupId"} {
		n, ok := sent[f].(json.Number)
		if !ok || !isIntegerText([]byte(n)) {
			continue
		}
		if kept[f] != string(n) {
			t.Fatalf("raw %q: %s %s was kept as %v", raw, f, n, kept[f])
		}
	}
}

func TestBadTextIsRefusedNamingTheField(t *testing.T) {
	f := func(raw, want string) {
		t.Helper()
		var n Normalizer
		_, _, nerr := n.Normalize(nil, []byte(raw), now, DefaultLimits, Defaults{})
		_, derr := Decode([]byte(raw), now, DefaultLimits, Defaults{})
		for _, err := range []error{nerr, derr} {
			if err == nil || err.Error() != want+": "+textReason {
				t.Fatalf("%q: got %v, want %s: %s", raw, err, want, textReason)
			}
		}
		// In a batch the item is refused, its neighbour kept.
		var b NormalizedBatch
		if err := n.NormalizeBatch(&b, []byte(batchOf(`{"type":"track","userId":"1","event":"a"}`, raw)), now, DefaultLimits); err != nil {
			t.Fatal(err)
		}
		if b.Items[0].Err != nil || b.Items[1].Err == nil || b.Items[1].Err.Error() != want+": "+textReason {
			t.Fatalf("%q in a batch: %v / %v", raw, b.Items[0].Err, b.Items[1].Err)
		}
	}
	f(`{"type":"track","event":"x","userId":"\ud800"}`, "userId")
	f(`{"type":"track","event":"x","userId":"a\udc00"}`, "userId")
	f(`{"type":"track","event":"x","userId":"\ud800\u0041"}`, "userId")
	f("{\"type\":\"track\",\"event\":\"x\",\"anonymousId\":\"\xff\"}", "anonymousId")
	f("{\"type\":\"track\",\"event\":\"x\",\"userId\":\"\xed\xa0\x80\"}", "userId")
	f(`{"type":"track","event":"x","userId":"1","properties":{"tags":["a","\udfff"]}}`, "properties.tags[1]")
	f("{\"type\":\"track\",\"event\":\"x\",\"userId\":\"1\",\"context\":{\"page\":{\"k\xc3\":1}}}", "context.page.k\uFFFD")
	f(`{"type":"track","event":"x","userId":"1","traits":{"a":{"b":[1,{"c":"\uD800x"}]}}}`, "traits.a.b[1].c")

	// A pair is text, kept as it is.
	var n Normalizer
	out, info, err := n.Normalize(nil, []byte(`{"type":"track","event":"x","userId":"\ud83d\ude00"}`), now, DefaultLimits, Defaults{})
	if err != nil || info.EntityID != "😀" {
		t.Fatalf("a surrogate pair: %v %q %s", err, info.EntityID, out)
	}

	// At the top of a batch: the whole request.
	err = n.NormalizeBatch(&NormalizedBatch{}, []byte(`{"batch":[],"context":{"ip":"\udc00"}}`), now, DefaultLimits)
	if err == nil || err.Error() != "context.ip: "+textReason {
		t.Fatalf("batch context: %v", err)
	}
}

func TestNumericIDsKeepTheirDigits(t *testing.T) {
	f := func(raw, want string) {
		t.Helper()
		var n Normalizer
		out, info, err := n.Normalize(nil, []byte(raw), now, DefaultLimits, Defaults{})
		if err != nil || info.EntityID != want {
			t.Fatalf("Normalize(%s): %v, id %q, want %q", raw, err, info.EntityID, want)
		}
		e, err := Decode([]byte(raw), now, DefaultLimits, Defaults{})
		if err != nil || e.EntityID() != want {
			t.Fatalf("Decode(%s): %v, want %q", raw, err, want)
		}
		back, err := Unmarshal(out)
		if err != nil || back.EntityID() != want {
			t.Fatalf("record %s: %v", out, err)
		}
		var b NormalizedBatch
		if err := n.NormalizeBatch(&b, []byte(batchOf(raw)), now, DefaultLimits); err != nil || string(b.Items[0].Key) != want {
			t.Fatalf("NormalizeBatch(%s): %v, key %q", raw, err, b.Items[0].Key)
		}
		checkSame(t, []byte(raw), Defaults{})
	}
	// 2^53+1: a float64 would make it 9007199254740992.
	f(`{"type":"identify","userId":9007199254740993}`, "9007199254740993")
	f(`{"type":"identify","userId":9007199254740992}`, "9007199254740992")
	f(`{"type":"identify","anonymousId":-123456789012345678901234567890}`, "-123456789012345678901234567890")
	f(`{"type":"identify","userId":  18446744073709551617 }`, "18446744073709551617")
	// Numbers with a fraction or an exponent read as before.
	f(`{"type":"identify","userId":1.5e3}`, "1500")
	f(`{"type":"identify","userId":2.50}`, "2.5")
	f(`{"type":"identify","userId":612}`, "612")
}

func TestIDLengthLimit(t *testing.T) {
	at := strings.Repeat("é", MaxIDLen/2)
	checkSame(t, []byte(`{"type":"identify","userId":"`+at+`"}`), Defaults{})
	if _, err := Decode([]byte(`{"type":"identify","userId":"`+at+`"}`), now, DefaultLimits, Defaults{}); err != nil {
		t.Fatalf("an id of %d bytes: %v", MaxIDLen, err)
	}
	f := func(raw, want string) {
		t.Helper()
		var n Normalizer
		_, _, nerr := n.Normalize(nil, []byte(raw), now, DefaultLimits, Defaults{})
		_, derr := Decode([]byte(raw), now, DefaultLimits, Defaults{})
		if nerr == nil || derr == nil || nerr.Error() != want || derr.Error() != want {
			t.Fatalf("%.60s...: %v / %v, want %s", raw, nerr, derr, want)
		}
	}
	f(`{"type":"identify","userId":"`+at+`x"}`, "userId: is 257 bytes, over the 256 byte limit")
	f(`{"type":"identify","userId":"1","anonymousId":"`+strings.Repeat("a", 300)+`"}`, "anonymousId: is 300 bytes, over the 256 byte limit")
	f(`{"type":"group","userId":"1","groupId":`+strings.Repeat("7", 257)+`}`, "groupId: is 257 bytes, over the 256 byte limit")
	f(`{"type":"alias","userId":"1","previousId":"\u00e9`+strings.Repeat("a", 255)+`"}`, "previousId: is 257 bytes, over the 256 byte limit")
	f(`{"type":"identify","userId":1e400}`, "userId: number 1e400 is out of range: send the id as a string")
}

func TestBodyString(t *testing.T) {
	f := func(body, want string, wantOK bool) {
		t.Helper()
		got, ok := BodyString([]byte(body), "writeKey")
		if got != want || ok != wantOK {
			t.Fatalf("BodyString(%s) = %q %v, want %q %v", body, got, ok, want, wantOK)
		}
	}
	f(`{"writeKey":"k"}`, "k", true)
	f(` { "batch" : [ {"writeKey":"inner"} ] , "writeKey" : "k\u0031" } `, "k1", true)
	f(`{"writeKey":"a","writeKey":"b"}`, "b", true)
	f(`{"WRITEKEY":"k"}`, "k", true)
	f(`{"writeKey":"k","batch":[`, "k", true) // cut short after the key
	f(`{"batch":[{"writeKey":"inner"}]}`, "", false)
	f(`{"writeKey":7}`, "", false)
	f(`[{"writeKey":"k"}]`, "", false)
	f(`not json`, "", false)
	f(``, "", false)
}
