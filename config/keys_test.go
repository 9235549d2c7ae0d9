package config

import "testing"

func TestKeyWithScope(t *testing.T) {
	cfg, err := Parse([]byte(`
keys:
  - {name: a, key: admin-key, scopes: [admin]}
  - {name: r, key: read-key, scopes: [read]}
  - {name: rw, key: rw-key, scopes: [read, write]}
`), "k.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f := func(scope, want string) {
		t.Helper()
		if got := cfg.KeyWithScope(scope); got != want {
			t.Errorf("KeyWithScope(%q) = %q, want %q", scope, got, want)
		}
	}
	f(ScopeRead, "read-key")
	f(ScopeWrite, "rw-key")
	f(ScopeAdmin, "admin-key")
	f("nope", "")
}
