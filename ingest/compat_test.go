package ingest_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSegmentAnalyticsNode drives the real @segment/analytics-node package
// (installed by scripts/install-test-deps.sh) against ingest and checks that
// every event arrived exactly once, with its type and ids.
func TestSegmentAnalyticsNode(t *testing.T) {
	dir, _ := filepath.Abs("testdata/compat")
	if _, err := os.Stat(filepath.Join(dir, "node_modules/@segment/analytics-node")); err != nil {
		t.Fatalf("@segment/analytics-node is not installed: run `make test-deps` (%v)", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: %v", err)
	}
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	const n = 100
	cmd := exec.Command(node, "send.mjs", h.url, "wk", "100")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("analytics-node: %v\n%s", err, stderr)
	}
	var ids []string
	if err := json.Unmarshal(out, &ids); err != nil || len(ids) != n {
		t.Fatalf("analytics-node printed %q: %v", out, err)
	}
	events := decodeEvents(t, consume(t, brokers, "pulse.events", n))
	for i, id := range ids {
		e := events[id]
		if e == nil {
			t.Fatalf("message %s never arrived", id)
		}
		want := []string{"track", "identify", "page", "screen"}[i%4]
		if string(e.Type) != want {
			t.Fatalf("message %s: type %s, want %s", id, e.Type, want)
		}
		if lib, _ := e.Context["library"].(map[string]any); lib["name"] != "@segment/analytics-node" {
			t.Fatalf("message %s: context.library = %v", id, e.Context["library"])
		}
		if e.Timestamp.IsZero() || e.ReceivedAt.IsZero() {
			t.Fatalf("message %s: timestamps missing", id)
		}
	}
	if e := events["node-msg-0"]; e.Event != "Order Completed" || e.Properties["revenue"] != 0.0 || e.UserID != "node-0" {
		t.Fatalf("track: %+v", e)
	}
}
