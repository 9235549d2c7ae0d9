package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulse-rt/pulse/internal/testenv"
)

// TestNewcomerErrors runs the commands a newcomer runs outside `pulse dev`
// and checks that each stops with a non-zero exit and says what to do
// next: validate with no config here; backfill with no ClickHouse; verify
// where there is no online store (it used to create an empty one and
// report every entity missing, with exit 0).
func TestNewcomerErrors(t *testing.T) {
	bin := testenv.BuildPulse(t)
	native, _ := testenv.ClickHouse(t)
	dir := t.TempDir()
	run := func(args ...string) (int, string) { return runBin(t, bin, dir, args...) }
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"validate"}, "no pulse.yaml here and no pulse dev running here: pass the config to check with -config FILE"},
		{[]string{"backfill", "verify"}, "start `pulse dev` in this directory"},
		{[]string{"backfill", "training-set", "-labels", "l.csv", "-features", "a", "-out", "x.csv"}, "start `pulse dev` in this directory"},
	} {
		if code, out := run(c.args...); code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("pulse %s: exit %d, output:\n%s\nwant exit 1 and %q", strings.Join(c.args, " "), code, out, c.want)
		}
	}
	conf := filepath.Join(dir, "ch.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("clickhouse: {addr: %q}\nfeatures: [{name: orders, agg: count, event: Order Completed}]\n", native)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := run("backfill", "verify", "-config", conf); code != 1 || !strings.Contains(out, "no online store at") {
		t.Errorf("verify with no store: exit %d, output:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "pulse-data", "store")); !os.IsNotExist(err) {
		t.Errorf("verify created a store: %v", err)
	}
}
