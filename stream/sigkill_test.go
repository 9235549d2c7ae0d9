package stream

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
)

// A real `pulse stream` process is killed with SIGKILL during a load and
// started again: the features equal the reference and every segment
// change is on pulse.segments once.
// With stream.commit_interval too: the kill then often drops a
// transaction kept open across fetches.
func TestSIGKILLPulseStream(t *testing.T) {
	t.Parallel() // waits on brokers and processes more than it computes
	t.Run(config.StoreWriteCommitted, func(t *testing.T) { sigkillPulseStream(t, config.StoreWriteCommitted, "") })
	// early without an interval commits each fetch; early alone takes
	// config.EarlyCommitInterval.
	t.Run(config.StoreWriteEarly, func(t *testing.T) { sigkillPulseStream(t, config.StoreWriteEarly, "0") })
	t.Run(config.StoreWriteEarly+"/commit_interval", func(t *testing.T) { sigkillPulseStream(t, config.StoreWriteEarly, "") })
}

func sigkillPulseStream(t *testing.T, storeWrite, interval string) {
	e := newEnv(t, testenv.Kafka(t))
	dir := t.TempDir()
	bin := testenv.BuildPulse(t)
	listen := testenv.FreeAddr(t)
	tp := e.cfg.Kafka.Topics
	cfgFile := filepath.Join(dir, "pulse.yaml")
	storePath := filepath.Join(dir, "store")
	yaml := fmt.Sprintf(`data_dir: %s
kafka:
  brokers: [%q]
  topics: {events: %s, invalid: %s, segments: %s, state: %s, predictions: %s, seeds: %s, activations: %s}
store: {backend: pebble, path: %s}
%s
`, filepath.Join(dir, "data"), e.brokers[0], tp.Events, tp.Invalid, tp.Segments, tp.State, tp.Events+".predictions", tp.Seeds, tp.Activations, storePath,
		testConfig[len("\n"):])
	stream := fmt.Sprintf("stream:\n  group: %s\n  listen: %q\n  store_write: %s\n", e.cfg.Stream.Group, listen, storeWrite)
	if interval != "" {
		stream += "  commit_interval: " + interval + "\n"
	}
	yaml = replaceOnce(yaml, "stream:\n", stream)
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "pulse.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() || testing.Verbose() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("pulse stream log:\n%s", b)
		}
	}()
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "stream", "-config", cfgFile)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	ref := newReference(t, e.cfg)
	recs := loadInto(ref, 7, 50, 10000)
	cmd := start()
	half := len(recs) / 2
	for i := 0; i < half; i += 500 {
		e.produce(recs[i:min(i+500, half)]...)
		time.Sleep(30 * time.Millisecond)
	}
	// Kill while it works: wait for some progress first.
	e.waitGroupProgress(t, 60*time.Second, 1)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	e.produce(recs[half:]...)
	cmd = start()
	e.waitGroupProgress(t, 90*time.Second, -1)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("pulse stream after SIGTERM: %v", err)
	}
	// The interval in effect, as the process logged it.
	wantInterval := "commit_interval=0s"
	if storeWrite == config.StoreWriteEarly && interval == "" {
		wantInterval = "commit_interval=" + config.EarlyCommitInterval.String()
	}
	if b, _ := os.ReadFile(logf.Name()); !strings.Contains(string(b), wantInterval) {
		t.Errorf("pulse stream did not log %s", wantInterval)
	}
	store, err := featurestore.OpenPebble(storePath, featurestore.PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	now := time.Now()
	bad := 0
	for id := range ref.st {
		want, wantSegs := ref.vector(id, now)
		v, err := store.Get(context.Background(), entity, id)
		if err != nil || !reflect.DeepEqual(v.Features, want) || !reflect.DeepEqual(v.Segments, wantSegs) && len(v.Segments)+len(wantSegs) > 0 {
			t.Errorf("user %s (err %v):\n got %v %v\nwant %v %v", id, err, v.Features, v.Segments, want, wantSegs)
			if bad++; bad > 5 {
				t.FailNow()
			}
		}
	}
	ref.checkMembers(t, store, e.cfg.Segments, now)
	final := segmentChanges(t, e)
	for id := range ref.st {
		_, want := ref.vector(id, now)
		if !equal(final[id], want...) {
			t.Errorf("user %s: segments from the topic %v, want %v", id, final[id], want)
		}
	}
}

func replaceOnce(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	return s
}

// waitGroupProgress waits until the group's committed offsets reach the
// end of every partition (atLeast < 0), or add up to at least atLeast.
func (e *env) waitGroupProgress(t *testing.T, timeout time.Duration, atLeast int64) {
	t.Helper()
	if atLeast < 0 {
		testenv.WaitCommittedToEnd(t, e.prod, e.cfg.Stream.Group, e.cfg.Kafka.Topics.Events, timeout)
		return
	}
	adm := kadm.NewClient(e.prod)
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		resp, err := adm.FetchOffsets(context.Background(), e.cfg.Stream.Group)
		var sum int64
		resp.Each(func(o kadm.OffsetResponse) {
			if o.Topic == e.cfg.Kafka.Topics.Events && o.At > 0 {
				sum += o.At
			}
		})
		if err == nil && sum >= atLeast {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group's offsets add up to %d after %s (err %v), want at least %d", sum, timeout, err, atLeast)
		}
	}
}
