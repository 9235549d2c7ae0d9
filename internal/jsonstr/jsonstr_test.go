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
