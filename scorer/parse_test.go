package scorer

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestParsePredict(t *testing.T) {
	var p predictBody
	body := `{"api_key":"k\u00e9y","model":"m","extra":{"a":[1,true,null,"x"]},"features":[
		{"user":{"id":612}},
		{"us\"er":{"id":"a\/b","orders":4.5e1,"flag":true,"off":false,"gone":null,"n\u0061me":"12"}}]}`
	if err := parsePredict([]byte(body), &p, 10); err != nil {
		t.Fatal(err)
	}
	if p.apiKey != "kéy" || p.model != "m" || !p.features || len(p.rows) != 2 {
		t.Fatalf("%+v", p)
	}
	r0, r1 := p.rows[0], p.rows[1]
	if string(r0.entity) != "user" || r0.id != "612" || r0.kv != [2]int{0, 0} {
		t.Errorf("row 0: %+v", r0)
	}
	if string(r1.entity) != `us"er` || r1.id != "a/b" || r1.kv != [2]int{0, 5} {
		t.Errorf("row 1: %+v", r1)
	}
	want := []struct {
		name string
		v    float64
	}{{"orders", 45}, {"flag", 1}, {"off", 0}, {"gone", math.NaN()}, {"name", 12}}
	for i, w := range want {
		kv := p.kv[i]
		if string(kv.name) != w.name || !(kv.value == w.v || math.IsNaN(w.v) && math.IsNaN(kv.value)) {
			t.Errorf("kv %d: %s=%v, want %s=%v", i, kv.name, kv.value, w.name, w.v)
		}
	}

	f := func(body, wantErr string) {
		t.Helper()
		err := parsePredict([]byte(body), &p, 2)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: got %v, want %q", body, err, wantErr)
		}
	}
	f(``, "invalid JSON at byte 0")
	f(`{"model":"m"} x`, "data after the JSON object")
	f(`{"model":1}`, "invalid JSON at byte 9")
	f("{\"model\":\"m\x01\"}", "control character")
	f(`{"features":[{"user":{"id":1}},{"user":{"id":1}},{"user":{"id":1}}]}`, "too many rows")
	f(`{"features":[{"user":{"id":-}}]}`, "invalid number")
	f(`{"features":[{"user":{"id":012}}]}`, "invalid number")
	f(`{"features":[{"user":{"id":1,"x":[1]}}]}`, "features[0].user.x: want a number, got a list")
	f(`{"features":[{"user":{"id":""}}]}`, "features[0].user.id: want a non-empty string")
	f(`{"features":[{}]}`, "features[0]: want exactly one key")
	f(`{"features":[1]}`, "features[0]: want an object")
	f(`{"features":[{"user":1}]}`, "features[0].user: want an object")
	f(`{"features":[{"user":{"id":1}`, "unexpected end of body")
	f(`{"a":"\q"}`, `invalid escape \q`)
	f(`{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`, "nested too deep")
}

// FuzzParsePredict checks the hand-written reader never accepts what is not
// JSON, and agrees with encoding/json on the fields it reads.
func FuzzParsePredict(f *testing.F) {
	f.Add(`{"api_key":"k","model":"m","features":[{"user":{"id":612,"x":1.5}}]}`)
	f.Add(`{"model":"m\u00e9","features":[{"user":{"id":"a","b":null,"c":true}}],"z":[{}]}`)
	f.Add(`{"features":[{"u\"":{"id":"\ud83d\ude00"}}]}`)
	f.Fuzz(func(t *testing.T, body string) {
		var p predictBody
		if err := parsePredict([]byte(body), &p, 1000); err != nil {
			return
		}
		var std struct {
			APIKey   *string                     `json:"api_key"`
			Model    *string                     `json:"model"`
			Features []map[string]map[string]any `json:"features"`
		}
		if !json.Valid([]byte(body)) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if err := json.Unmarshal([]byte(body), &std); err != nil {
			return // e.g. duplicate keys of other types; not our concern
		}
		if std.Model != nil && *std.Model != p.model && !strings.Contains(body, `"model"`+`:`) {
			t.Fatalf("model %q vs %q", p.model, *std.Model)
		}
	})
}

// TestParsePredictHoles: no NaN or infinity reaches a model, and ids are
// read as ingest keeps them.
func TestParsePredictHoles(t *testing.T) {
	var p predictBody
	f := func(body, wantErr string) {
		t.Helper()
		err := parsePredict([]byte(body), &p, 2)
		if err == nil || err.Error() != wantErr {
			t.Errorf("%s: got %v, want %q", body, err, wantErr)
		}
	}
	for _, s := range []string{"NaN", "nan", "Inf", "-Inf", "+Infinity", "infinity", "1e999"} {
		f(`{"features":[{"user":{"id":1,"x":"`+s+`"}}]}`, `features[0].user.x: want a number, got the string "`+s+`"`)
	}
	f(`{"features":[{"user":{"id":1,"x":1e999}}]}`, "features[0].user.x: want a finite number, got 1e999")
	f(`{"features":[{"user":{"id":1,"x":-1e999}}]}`, "features[0].user.x: want a finite number, got -1e999")
	f(`{"features":[{"user":{"id":1e999}}]}`, "features[0].user.id: number 1e999 is out of range: send the id as a string")
	f(`{"features":[{"user":{"id":"\ud800"}}]}`, `features[0].user.id: is not valid Unicode text (invalid UTF-8, or a lone surrogate such as \ud800): send UTF-8`)
	f("{\"features\":[{\"user\":{\"id\":\"\xff\"}}]}", `features[0].user.id: is not valid Unicode text (invalid UTF-8, or a lone surrogate such as \ud800): send UTF-8`)

	ids := func(body string, want ...string) {
		t.Helper()
		if err := parsePredict([]byte(body), &p, 10); err != nil {
			t.Fatal(err)
		}
		for i, w := range want {
			if p.rows[i].id != w {
				t.Errorf("%s: row %d id %q, want %q", body, i, p.rows[i].id, w)
			}
		}
	}
	ids(`{"features":[{"user":{"id":9007199254740993}},{"user":{"id":1.5e3}},{"user":{"id":"\ud83d\ude00"}},{"user":{"id":-0}}]}`,
		"9007199254740993", "1500", "😀", "-0")
	if err := parsePredict([]byte(`{"features":[{"user":{"id":1,"x":"1.5e2","y":-2e-3}}]}`), &p, 1); err != nil || p.kv[0].value != 150 || p.kv[1].value != -0.002 {
		t.Fatalf("finite values: %v %+v", err, p.kv)
	}
}
