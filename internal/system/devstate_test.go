package system

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The commands run beside `pulse dev` find it through pulse-data/dev.json:
// without -config, its config with its ClickHouse; with -config, that file
// pointed at the dev running on its data dir; a file left by a dev that is
// gone (SIGKILL) is ignored, and removing the state is dev's own to do.
func TestLoadBeside(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	conf := "kafka: {brokers: [\"127.0.0.1:1\"]}\nkeys: [{name: r, key: k, scopes: [read]}]\n"
	if err := os.WriteFile("my.yaml", []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, st, err := LoadBeside("my.yaml"); err != nil || st != nil {
		t.Fatalf("no dev: state %v, err %v", st, err)
	}
	remove, err := writeDevState("pulse-data", DevState{PID: os.Getpid(), Config: filepath.Join(dir, "my.yaml"),
		Kafka: []string{"127.0.0.1:9092"}, ClickHouse: "127.0.0.1:9000", Database: "pulse", Scorer: "127.0.0.1:8081"})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"", "my.yaml"} {
		cfg, st, err := LoadBeside(path)
		if err != nil || st == nil {
			t.Fatalf("%q: state %v, err %v", path, st, err)
		}
		if cfg.ClickHouse.Addr != "127.0.0.1:9000" || strings.Join(cfg.Kafka.Brokers, ",") != "127.0.0.1:9092" || cfg.KeyWithScope("read") != "k" {
			t.Fatalf("%q: clickhouse %q, brokers %v, read key %q: want dev's parts and my.yaml", path, cfg.ClickHouse.Addr, cfg.Kafka.Brokers, cfg.KeyWithScope("read"))
		}
	}
	remove()
	if _, err := os.Stat(filepath.Join("pulse-data", DevStateFile)); !os.IsNotExist(err) {
		t.Fatalf("after remove: %v", err)
	}

	// A dev that is gone: its file stays, and is ignored.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := writeDevState("pulse-data", DevState{PID: gone.Process.Pid, Config: filepath.Join(dir, "my.yaml")}); err != nil {
		t.Fatal(err)
	}
	if st, err := ReadDevState("pulse-data"); err != nil || st != nil {
		t.Fatalf("a dead dev's state: %v, %v; want none", st, err)
	}
}
