package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestImportKilledAndResumed SIGKILLs a real `pulse import events` process
// mid-file against a real broker and runs the same command again: the
// topic then holds the rows sent before the kill twice, under the same
// derived messageIds, and a real `pulse stream` over it counts each row
// once (every user's order count and revenue are the file's).
func TestImportKilledAndResumed(t *testing.T) {
	const users, perUser = 1000, 300
	const rows = users * perUser
	bin := testenv.BuildPulse(t)
	brokers := testenv.Kafka(t)
	prefix := testenv.Topic(t, "importkill")
	dir := t.TempDir()
	storePath := filepath.Join(dir, "store")
	conf := fmt.Sprintf(`data_dir: %s
kafka:
  brokers: [%q]
  topics: {events: %[3]s.events, invalid: %[3]s.invalid, segments: %[3]s.segments, predictions: %[3]s.predictions,
           state: %[3]s.state, seeds: %[3]s.seeds, activations: %[3]s.activations}
store: {backend: pebble, path: %s}
stream:
  group: %[3]s.group
  listen: %[5]q
  allowed_lateness: 2d
features:
  - {name: orders, agg: count, event: Order Completed}
  - {name: revenue, agg: sum, event: Order Completed, field: properties.revenue}
`, filepath.Join(dir, "data"), brokers[0], prefix, storePath, testenv.FreeAddr(t))
	cfgPath := filepath.Join(dir, "pulse.yaml")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// Row i: user i%users, revenue i%7+1, a second apart, ending an hour ago.
	var b strings.Builder
	b.WriteString("userId,event,properties.revenue,timestamp\n")
	start := time.Now().Add(-time.Hour - rows*time.Millisecond).UTC()
	wantRevenue := make([]float64, users)
	for i := 0; i < rows; i++ {
		fmt.Fprintf(&b, "u%d,Order Completed,%d,%s\n", i%users, i%7+1, start.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano))
		wantRevenue[i%users] += float64(i%7 + 1)
	}
	file := filepath.Join(dir, "orders.csv")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	events := prefix + ".events"
	// Created here, so that this client's metadata knows it from the start.
	if _, err := adm.CreateTopics(context.Background(), 4, 1, nil, events); err != nil {
		t.Fatal(err)
	}
	inTopic := func() int64 {
		ends, err := adm.ListEndOffsets(context.Background(), events)
		if err != nil {
			return -1
		}
		var n int64
		ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
		return n
	}

	// The first run, killed once some of the file is in.
	var log1 strings.Builder
	cmd := exec.Command(bin, "import", "events", "-config", cfgPath, file)
	cmd.Stderr = &log1
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for inTopic() < rows/20 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%d records in the topic after 60s; the import said:\n%s", inTopic(), log1.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// Requests the process sent before it died may still land: wait until
	// the count holds still.
	before := inTopic()
	for settled := 0; settled < 10; settled++ {
		time.Sleep(50 * time.Millisecond)
		if n := inTopic(); n != before {
			before, settled = n, 0
		}
	}
	if before >= rows {
		t.Fatalf("the import had sent all %d rows before the kill; the test needs it killed mid-file\n%s", before, log1.String())
	}
	t.Logf("killed with %d of %d rows in the topic", before, rows)

	// The same command again, to the end.
	out, err := exec.Command(bin, "import", "events", "-config", cfgPath, file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%d imported, 0 refused", rows)) {
		t.Fatalf("the resumed import: %v\n%s", err, out)
	}
	total := inTopic()
	if total != before+rows {
		t.Fatalf("%d records in the topic, want %d (%d before the kill, then the whole file)", total, before+rows, before)
	}
	seen := map[string]int{}
	for _, r := range testenv.ConsumeExactly(t, brokers, events, int(total)) {
		e, err := event.Unmarshal(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		seen[e.MessageID]++
	}
	twice := 0
	for _, n := range seen {
		if n == 2 {
			twice++
		}
	}
	if len(seen) != rows || int64(twice) != before {
		t.Fatalf("%d distinct messageIds (%d twice) in %d records; want %d, %d twice", len(seen), twice, total, rows, before)
	}

	streamOnce(t, bin, cfgPath, brokers, prefix+".group", events, total)
	store, err := featurestore.OpenPebble(storePath, featurestore.PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	bad := 0
	for u := 0; u < users; u++ {
		v, err := store.Get(context.Background(), aggregate.DefaultEntity, fmt.Sprintf("u%d", u))
		if err != nil || v.Features["orders"] != float64(perUser) || math.Abs(v.Features["revenue"].(float64)-wantRevenue[u]) > 1e-6 {
			t.Errorf("u%d (err %v): %v; want orders %d, revenue %g: each row counted once", u, err, v.Features, perUser, wantRevenue[u])
			if bad++; bad > 5 {
				t.FailNow()
			}
		}
	}
}

// streamOnce runs `pulse stream` until its group has committed n records
// of topic, then stops it with SIGTERM.
func streamOnce(t *testing.T, bin, cfgPath string, brokers []string, group, topic string, n int64) {
	t.Helper()
	var logb strings.Builder
	cmd := exec.Command(bin, "stream", "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = &logb, &logb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("pulse stream log:\n%s", logb.String())
		}
	}()
	cl, err := kafka.NewClient(config.Kafka{Brokers: brokers, ClientID: "import-kill-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	testenv.WaitFor(t, 3*time.Minute, "pulse stream's group to reach the end of the events", func() bool {
		resp, err := adm.FetchOffsets(context.Background(), group)
		if err != nil {
			return false
		}
		var sum int64
		resp.Each(func(o kadm.OffsetResponse) {
			if o.Topic == topic {
				sum += o.At
			}
		})
		return sum >= n
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pulse stream after SIGTERM: %v", err)
	}
}
