package system

import (
	"testing"

	"github.com/pulse-rt/pulse/config"
)

// TestDashboardKey: pulse dev hands the dashboard a key with the read
// scope alone, never one that can also write or reload.
func TestDashboardKey(t *testing.T) {
	cfg, err := config.Load("../../examples/ecommerce/pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := dashboardKey(cfg); got != "dev-read-key" {
		t.Fatalf("the example's dashboard key is %q, want dev-read-key", got)
	}
	cfg, err = config.Parse([]byte(`
keys:
  - {name: a, key: admin-read, scopes: [read, admin]}
  - {name: w, key: read-write, scopes: [read, write]}
`), "k.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := dashboardKey(cfg); got != "" {
		t.Fatalf("dashboard key %q from keys with more than read", got)
	}
}
