package system

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/stream"
	"github.com/twmb/franz-go/pkg/kgo"
)

const reloadConfig = `
kafka:
  brokers: [BROKER]
features:
  - {name: revenue_lifetime, agg: sum, event: Order Completed, field: properties.revenue}
segments:
  - {name: big, rule: 'revenue_lifetime > LIMIT'}
`

// TestStreamReloadReevaluatesSegments: a changed rule, reloaded (SIGHUP in
// `pulse stream`), re-evaluates the members already stored, with no new
// event; a broken config on reload changes nothing.
func TestStreamReloadReevaluatesSegments(t *testing.T) {
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "pulse.yaml")
	write := func(limit string) {
		y := strings.NewReplacer("BROKER", emb.Addrs()[0], "LIMIT", limit).Replace(reloadConfig)
		if err := os.WriteFile(path, []byte("data_dir: "+filepath.Join(dir, "data")+"\n"+y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("500")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	store, err := featurestore.OpenPebble(filepath.Join(dir, "store"), featurestore.PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan struct{}, 1)
	var current atomic.Pointer[stream.Processor]
	done := make(chan error, 1)
	go func() { done <- superviseStream(ctx, path, cfg, store, reload, &current) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("superviseStream: %v", err)
		}
	}()

	cl, err := kgo.NewClient(kgo.SeedBrokers(emb.Addrs()...), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ev := `{"type":"track","messageId":"m1","userId":"u1","event":"Order Completed","properties":{"revenue":600},"timestamp":"` +
		time.Now().UTC().Format(time.RFC3339Nano) + `","receivedAt":"` + time.Now().UTC().Format(time.RFC3339Nano) + `"}`
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "pulse.events", Key: []byte("u1"), Value: []byte(ev)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	segmentsOf := func() []string {
		v, err := store.Get(ctx, "user", "u1")
		if err != nil {
			return nil
		}
		return v.Segments
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30s (segments %v)", what, segmentsOf())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("u1 in big", func() bool { return slices.Contains(segmentsOf(), "big") })

	// A broken config: logged, nothing changes.
	if err := os.WriteFile(path, []byte("features: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	first := current.Load()
	reload <- struct{}{}
	time.Sleep(500 * time.Millisecond)
	if current.Load() != first || !slices.Contains(segmentsOf(), "big") {
		t.Fatal("a broken config was taken")
	}

	// The rule now excludes u1: it leaves with no new event.
	write("1000")
	reload <- struct{}{}
	waitFor("u1 out of big after the reload", func() bool { return current.Load() != first && !slices.Contains(segmentsOf(), "big") })
}
