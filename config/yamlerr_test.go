package config

import (
	"os"
	"strings"
	"testing"
)

// TestDecoderProblemsNamed: what the YAML decoder refuses (unknown keys,
// values of the wrong type, a bad duration) is reported as the checks
// report theirs: the line, the setting's path (list items by name) and
// what it wants, an unknown key with the nearest known one when it looks
// like a typo.
func TestDecoderProblemsNamed(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"kafka:\n  partitons: 4\n", "p.yaml:2: kafka.partitons: unknown setting (did you mean partitions?)"},
		{"identty:\n  enabled: true\n", "p.yaml:1: identty: unknown setting (did you mean identity?)"},
		{"completely_unknown: 1\n", "p.yaml:1: completely_unknown: unknown setting"},
		{"features:\n  - name: o\n    agg: count\n    evnt: Order Completed\n", "p.yaml:4: features[o].evnt: unknown setting (did you mean event?)"},
		{"features:\n  - agg: count\n    Event: x\n", "p.yaml:3: features[0].Event: unknown setting (did you mean event?)"},
		{"identity:\n  merge_known_users: maybe\n", `p.yaml:2: identity.merge_known_users: want true or false, got "maybe"`},
		{"kafka:\n  brokers: a-very-long-broker-name.internal.example:9092\n",
			`p.yaml:2: kafka.brokers: want a list, got "a-very-long-broker-name.internal.example:9092"`},
		{"stream:\n  store_write: [early]\n", "p.yaml:2: stream.store_write: want a string, got a list"},
		{"stream:\n  store_write:\n    - early\n", "p.yaml:3: stream.store_write: want a string, got a list"},
		{"features:\n  - name: r\n    agg: last_n\n    field: properties.x\n    n: many\n", `p.yaml:5: features[r].n: want a whole number, got "many"`},
		{"kafka: {partitions: lots}\n", `p.yaml:1: kafka.partitions: want a whole number, got "lots"`},
		{"stream:\n  commit_interval: soon\n", `p.yaml:2: stream.commit_interval: invalid duration "soon" (want e.g. 10m, 1h, 7d)`},
	} {
		_, err := Parse([]byte(c.src), "p.yaml")
		errs, ok := AsErrors(err)
		if !ok {
			t.Errorf("%q: error %v is not Errors", c.src, err)
			continue
		}
		found := false
		for _, p := range errs {
			found = found || p.String() == c.want
		}
		if !found {
			t.Errorf("%q:\n got %s\nwant %s", c.src, strings.ReplaceAll(errs.Error(), "\n", "\n     "), c.want)
		}
	}
}

// FuzzParse: any file gives a config or problems, never a panic (the
// decoder's problems are explained by walking the file's nodes).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"kafka:\n  partitons: 4\n",
		"features:\n  - name: r\n    agg: last_n\n    n: many\n",
		"stream: {store_write: [early], commit_interval: soon}\n",
		"- a\n- b\n",
		"identity:\n  merge_known_users: maybe\n  trait_identifiers: {a: 1}\n",
		"segments:\n  - name: s\n    rule: x > 1\n    unknown: [1, 2]\n",
	} {
		f.Add([]byte(s))
	}
	if b, err := os.ReadFile("../examples/ecommerce/pulse.yaml"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, "f.yaml")
		if (c == nil) == (err == nil) {
			t.Fatalf("config %v and error %v", c != nil, err)
		}
	})
}
