package system

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
)

// TestDataDirDeleted: the data directory of pulse dev's parts (the
// embedded Kafka's log, the stream's state) is deleted while ingest
// serves. Within two seconds ingest answers 503 with Retry-After instead
// of acknowledging events it could not keep (before: 200, and every event
// was gone at the next restart), ingest's and the scorer's /readyz fail
// naming the directory, and the stream is not ready.
func TestDataDirDeleted(t *testing.T) {
	cfg, err := config.Parse([]byte("keys:\n  - {name: w, key: test-write-key, scopes: [write]}\n"), "pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Ingest.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Scorer.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Store.Path = filepath.Join(cfg.DataDir, "store")
	sys := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { sys.Close() })
	if err := sys.WatchDataDir(); err != nil {
		t.Fatal(err)
	}
	if err := sys.StartKafka(kafka.EmbeddedOptions{DataDir: filepath.Join(cfg.DataDir, "kafka"), Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if err := sys.OpenStore(); err != nil {
		t.Fatal(err)
	}
	if err := sys.StartIngest(); err != nil {
		t.Fatal(err)
	}
	if err := sys.StartScorer(ScorerOptions{}); err != nil {
		t.Fatal(err)
	}
	post := func() (int, string, string) {
		req, _ := http.NewRequest("POST", sys.IngestURL()+"/v1/track", strings.NewReader(`{"userId":"612","event":"Order Completed"}`))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("test-write-key", "")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error(), ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header.Get("Retry-After")
	}
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testenv.WaitFor(t, 10*time.Second, "ingest and the scorer ready", func() bool {
		c, _ := get(sys.IngestURL() + "/readyz")
		d, _ := get(sys.ScorerURL() + "/readyz")
		return c == 200 && d == 200
	})
	if code, body, _ := post(); code != 200 {
		t.Fatalf("before: %d %s", code, body)
	}
	if err := os.RemoveAll(cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	var code int
	var body, retry string
	testenv.WaitFor(t, 5*time.Second, "ingest refusing events", func() bool {
		code, body, retry = post()
		return code == 503
	})
	if took := time.Since(deleted); took > 3*time.Second { // checked every second; slack for a loaded machine
		t.Errorf("ingest took %s to refuse events, want about a second", took)
	}
	if retry == "" || !strings.Contains(body, cfg.DataDir) {
		t.Errorf("503 with Retry-After %q, body %s: want Retry-After and the directory named", retry, body)
	}
	if c, b := get(sys.IngestURL() + "/readyz"); c != 503 || !strings.Contains(b, "data directory") {
		t.Errorf("ingest /readyz: %d %s, want 503 naming the data directory", c, b)
	}
	testenv.WaitFor(t, 5*time.Second, "the scorer not ready", func() bool {
		c, b := get(sys.ScorerURL() + "/readyz")
		return c == 503 && strings.Contains(b, "data directory")
	})
	if err := sys.StreamReady(); err == nil || !strings.Contains(err.Error(), "data directory") {
		t.Errorf("StreamReady = %v, want the data directory named", err)
	}
}
