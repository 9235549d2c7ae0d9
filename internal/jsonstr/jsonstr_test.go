package jsonstr

import (
	"encoding/json"
	"testing"
)

func TestAppendRoundTrips(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\back`, "tab\tnl\ncr\r", "\x00\x1f", "é ünïcode", "</script>"} {
		var back string
		if err := json.Unmarshal(Append(nil, s), &back); err != nil || back != s {
			t.Fatalf("Append(%q) = %s: %v, back %q", s, Append(nil, s), err, back)
		}
	}
}

// AppendMarshal writes what encoding/json writes for a string, byte for
// byte: HTML-safe, U+2028/U+2029 escaped, invalid UTF-8 replaced.
func TestAppendMarshalMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `q"b\s`, "<a href='x'>&amp;</a>", "tab\tnl\ncr\r\x00\x1f\x7f",
		"line\u2028para\u2029", "bad\xff\xfeutf8", "é日本\U0001F600", "\b\f"} {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendMarshal(nil, s); string(got) != string(want) {
			t.Errorf("AppendMarshal(%q) = %s, want %s", s, got, want)
		}
	}
}
