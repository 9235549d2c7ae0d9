package stream

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A real `pulse stream` with an rfm block is killed with SIGKILL as soon as
// it has re-scored entities after new boundaries (a re-score in progress or
// just done), and started again: on pulse.segments no change is written
// twice and each user's enters and exits alternate, and every buyer ends in
// exactly one RFM group, the one its stored vector names.
func TestSIGKILLDuringRescore(t *testing.T) {
	t.Parallel() // waits on brokers and processes more than it computes
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
  topics: {events: %s, invalid: %s, segments: %s, state: %s, predictions: %s, seeds: %s, activations: %s, rfm: %s, traits: %s}
store: {backend: pebble, path: %s}
stream:
  group: %s
  listen: %q
  allowed_lateness: 400d
features:
  - name: last_order_at
    agg: last
    event: Order Completed
    field: timestamp
  - name: days_since_last_order
    expr: 'last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1'
  - name: orders
    agg: count
    event: Order Completed
  - name: revenue
    agg: sum
    event: Order Completed
    field: properties.revenue
rfm:
  recency: days_since_last_order
  frequency: orders
  monetary: revenue
  refresh: 1s
`, filepath.Join(dir, "data"), e.brokers[0], tp.Events, tp.Invalid, tp.Segments, tp.State, tp.Events+".predictions", tp.Seeds,
		tp.Activations, tp.Events+".rfm", tp.Events+".traits", storePath, e.cfg.Stream.Group, listen)
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "pulse.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
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
	const users = 6000
	now := time.Now()
	var recs []*kgo.Record
	for u := range users {
		id := fmt.Sprintf("u%d", u)
		for k := u % 3; k >= 0; k-- {
			at := now.Add(-time.Duration((u*7)%300+k*30) * 24 * time.Hour)
			recs = append(recs, eventRecord(t, order(id, fmt.Sprintf("o%d-%d", u, k), at, float64(10+u%400))))
		}
	}
	for i := 0; i < len(recs); i += 2000 {
		e.produce(recs[i:min(i+2000, len(recs))]...)
	}
	cmd := start()
	// Kill as soon as a re-score has begun committing.
	testenv.WaitFor(t, 90*time.Second, "a re-score", func() bool { return metric(listen, "pulse_stream_rfm_rescored_total") > 0 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	restarted, err := os.Stat(logf.Name()) // the restarted process logs past this
	if err != nil {
		t.Fatal(err)
	}
	cmd = start()
	e.waitGroupProgress(t, 90*time.Second, -1)
	// The new process has its four partitions (after the killed member's
	// session expired) once each reports the boundaries it scores with.
	testenv.WaitFor(t, 90*time.Second, "the restarted process's partitions", func() bool {
		return metric(listen, "pulse_stream_rfm_boundaries_version") >= 4
	})
	// The re-scores (what the kill left in Pebble, or all of a partition
	// whose switch the kill lost, then each newer version's) are worked off:
	// 6000 entities, a few chunks a timer tick. Done when every partition's
	// last re-score start in this process's log has its done line, twice
	// two refreshes apart (a fixed 5 s cut them short under CI load once),
	// or when none started in five refreshes (the killed process had
	// finished them all).
	prev, since, waiting := "", time.Time{}, time.Now()
	testenv.WaitFor(t, 120*time.Second, "the re-scores done", func() bool {
		b, _ := os.ReadFile(logf.Name())
		state, started, done := rescoresDone(string(b[restarted.Size():]))
		switch {
		case started == 0:
			return time.Since(waiting) > 5*time.Second
		case !done:
			prev = ""
			return false
		case state != prev:
			prev, since = state, time.Now()
			return false
		}
		return time.Since(since) >= 2*time.Second
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("pulse stream after SIGTERM: %v", err)
	}
	final := segmentChanges(t, e) // no change twice, enters and exits alternate
	store, err := featurestore.OpenPebble(storePath, featurestore.PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	bad := 0
	for u := range users {
		id := fmt.Sprintf("u%d", u)
		v, err := store.Get(context.Background(), entity, id)
		group, _ := v.Features["rfm_group"].(string)
		if err != nil || group == "" || len(final[id]) != 1 || final[id][0] != "rfm:"+group {
			t.Errorf("user %s: groups on the topic %v, stored group %q, segments %v (err %v)", id, final[id], group, v.Segments, err)
			if bad++; bad > 5 {
				t.FailNow()
			}
		}
	}
}

// rescoresDone reads a pulse stream log: each partition's last "re-scoring
// the partition" (or "re-score resumed") line and whether its version's
// "re-score done" line came after it. state names each started
// partition's last version (for the caller to see it hold), started counts
// them, and done is true when there is one and every one is done.
func rescoresDone(log string) (state string, started int, done bool) {
	begun, finished := map[string]string{}, map[string]string{}
	attr := func(line, key string) string {
		_, v, ok := strings.Cut(line, " "+key+"=")
		if !ok {
			return ""
		}
		v, _, _ = strings.Cut(v, " ")
		return v
	}
	for _, line := range strings.Split(log, "\n") {
		p, v := attr(line, "partition"), attr(line, "version")
		switch {
		case strings.Contains(line, `msg="rfm boundaries changed: re-scoring`), strings.Contains(line, `msg="rfm re-score resumed"`):
			begun[p], finished[p] = v, ""
		case strings.Contains(line, `msg="rfm re-score done"`):
			finished[p] = v
		}
	}
	parts := make([]string, 0, len(begun))
	done = len(begun) > 0
	for p, v := range begun {
		parts = append(parts, p+"@"+v)
		done = done && finished[p] == v
	}
	sort.Strings(parts)
	return strings.Join(parts, ","), len(begun), done
}

// metric reads a counter's value from a /metrics endpoint (summed over
// its labels); -1 when unreachable.
func metric(addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, name+" ") || strings.HasPrefix(l, name+"{") {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}
