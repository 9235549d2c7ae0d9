package ingest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The promise behind "success: true": an event ingest acknowledged is in
// Kafka, once, whatever crashes after the answer. These tests put ingest
// under load, crash a part for real, and then read the whole topic.

// TestAckedEventsSurviveIngestKill kills `pulse ingest` (SIGKILL, its own
// process) in the middle of a load: records still in its producer buffer
// die with it, so any of them answered 200 would be missing.
func TestAckedEventsSurviveIngestKill(t *testing.T) {
	t.Parallel() // waits on brokers and processes more than it computes
	bin := testenv.BuildPulse(t)
	brokers := testenv.Kafka(t)
	prefix := testenv.Topic(t, "crash")
	addr := testenv.FreeAddr(t)
	dir := t.TempDir()
	conf := fmt.Sprintf(`kafka:
  brokers: [%q]
  topics: {events: %[2]s.events, invalid: %[2]s.invalid, segments: %[2]s.segments, predictions: %[2]s.predictions,
           state: %[2]s.state, seeds: %[2]s.seeds, activations: %[2]s.activations}
ingest:
  listen: %[3]s
keys:
  - name: app
    key: wk
    scopes: [write]
`, brokers[0], prefix, addr)
	path := filepath.Join(dir, "pulse.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "ingest.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "ingest", "-config", path)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	url := "http://" + addr
	testenv.WaitFor(t, 60*time.Second, "ingest ready", func() bool {
		r, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})

	l := startLoad(url, 4, 20)
	testenv.WaitFor(t, 30*time.Second, "500 acknowledged events", func() bool { return l.ackedCount() >= 500 })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true
	acked := l.halt(t)
	t.Logf("acknowledged %d events before the kill; %d requests failed after it", len(acked), l.failed)
	checkDurable(t, brokers, prefix+".events", acked)
}

// TestAckedEventsSurviveBrokerKill kills the Kafka broker (SIGKILL) under
// load, leaves it down for 10 s, then starts it again: within a second of
// the kill ingest answers 503 with Retry-After, every request, the ones in
// flight included, within a second (before: each waited the 10 s produce
// timeout), never 200; afterwards it accepts again on its own. Every
// acknowledged event, from before the crash and after, is in the log
// exactly once.
func TestAckedEventsSurviveBrokerKill(t *testing.T) {
	t.Parallel() // waits on brokers and processes more than it computes
	k := testenv.StartKafka(t)
	brokers := []string{k.Addr()}
	// The default produce timeout: what a request waits for a broker that
	// may come back, and what it must not wait for one that is gone.
	h := newHarnessTuned(t, brokers, "", func(c *config.Config) { c.Ingest.ProduceTimeout = config.Duration(10 * time.Second) })
	l := startLoad(h.url, 4, 20)
	testenv.WaitFor(t, 30*time.Second, "500 acknowledged events", func() bool { return l.ackedCount() >= 500 })
	if err := k.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	testenv.WaitFor(t, 30*time.Second, "503 answers with the broker down", func() bool { return l.unavailableCount() >= 4 })
	if first := l.firstUnavailable().Sub(killed); first > time.Second {
		t.Errorf("the first 503 came %s after the broker was killed, want within a second", first)
	}
	time.Sleep(10*time.Second - time.Since(killed))
	if wait := l.longestWaitSince(killed); wait > 1500*time.Millisecond {
		t.Errorf("with the broker down a request waited %s for its answer, want about a second at most", wait)
	}
	before := l.ackedCount()
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 90*time.Second, "acknowledgements after the broker restarted", func() bool { return l.ackedCount() >= before+500 })
	acked := l.halt(t)
	t.Logf("acknowledged %d events (%d after the restart); %d requests answered 503", len(acked), len(acked)-before, l.unavailable)
	checkDurable(t, brokers, h.cfg.Kafka.Topics.Events, acked)
}

// TestAckedEventsSurviveNetworkFaults: the network to the broker drops
// every byte, both ways (toxiproxy's timeout toxic: no reset, the
// connections hang), or resets every connection (reset_peer), for 3 s.
// Ingest answers every request within its produce timeout (503 with
// Retry-After, never a hang), and once the network heals it accepts again
// on its own. Every acknowledged event is in the log once.
func TestAckedEventsSurviveNetworkFaults(t *testing.T) {
	t.Parallel() // waits on brokers and processes more than it computes
	brokers := testenv.Kafka(t)
	for _, fault := range []struct {
		name   string
		inject func(*testenv.Proxy)
	}{
		{"black hole", (*testenv.Proxy).BlackHole},
		{"resets", func(p *testenv.Proxy) { p.ResetPeer(0) }},
	} {
		t.Run(fault.name, func(t *testing.T) {
			proxy := testenv.StartProxy(t, brokers[0])
			h := newHarness(t, brokers, testenv.Topic(t, "nf"), kgo.Dialer(proxy.Dial))
			l := startLoad(h.url, 4, 20)
			testenv.WaitFor(t, 30*time.Second, "300 acknowledged events", func() bool { return l.ackedCount() >= 300 })
			fault.inject(proxy)
			cut := time.Now()
			testenv.WaitFor(t, 30*time.Second, "503 answers with the network faulty", func() bool { return l.unavailableCount() >= 4 })
			time.Sleep(3*time.Second - time.Since(cut))
			limit := h.cfg.Ingest.ProduceTimeout.D() + time.Second
			if wait := l.longestWaitSince(cut); wait > limit {
				t.Errorf("with the network faulty a request waited %s for its answer, want at most the produce timeout and some slack (%s)", wait, limit)
			}
			before := l.ackedCount()
			proxy.Heal()
			testenv.WaitFor(t, 60*time.Second, "acknowledgements after the network healed", func() bool { return l.ackedCount() >= before+300 })
			acked := l.halt(t)
			t.Logf("acknowledged %d events (%d after the heal); %d requests answered 503", len(acked), len(acked)-before, l.unavailable)
			checkDurable(t, brokers, h.cfg.Kafka.Topics.Events, acked)
		})
	}
}

// load posts batches of uniquely identified events from several workers,
// without retries, and keeps the message ids of the batches answered 200.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu          sync.Mutex
	answers     []answered
	acked       []string
	unavailable int      // answered 503
	failed      int      // no answer: the server is gone
	unexpected  []string // any other answer
}

func startLoad(url string, workers, batch int) *load {
	l := &load{stop: make(chan struct{})}
	client := &http.Client{Timeout: 30 * time.Second}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-l.stop:
					return
				default:
				}
				ids := make([]string, batch)
				var b strings.Builder
				b.WriteString(`{"batch":[`)
				for i := range ids {
					ids[i] = fmt.Sprintf("crash-%d-%d-%d", w, seq, i)
					if i > 0 {
						b.WriteByte(',')
					}
					fmt.Fprintf(&b, `{"type":"track","event":"Crash Test","userId":"u%d","messageId":%q}`, (w*7919+seq*31+i)%1000, ids[i])
				}
				b.WriteString(`]}`)
				req, _ := http.NewRequest("POST", url+"/v1/batch", strings.NewReader(b.String()))
				req.SetBasicAuth("wk", "")
				req.Header.Set("Content-Type", "application/json")
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					l.mu.Lock()
					l.failed++
					l.mu.Unlock()
					time.Sleep(20 * time.Millisecond)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				l.mu.Lock()
				l.answers = append(l.answers, answered{start, time.Now(), resp.StatusCode})
				switch resp.StatusCode {
				case http.StatusOK:
					l.acked = append(l.acked, ids...)
				case http.StatusServiceUnavailable:
					if resp.Header.Get("Retry-After") == "" {
						l.unexpected = append(l.unexpected, "503 without Retry-After")
					}
					l.unavailable++
				default:
					l.unexpected = append(l.unexpected, fmt.Sprintf("%d %s", resp.StatusCode, body))
				}
				l.mu.Unlock()
				if resp.StatusCode != http.StatusOK {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	return l
}

// answered is one request's start, answer time and status.
type answered struct {
	start, end time.Time
	code       int
}

// firstUnavailable is when the first 503 came.
func (l *load) firstUnavailable() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.answers {
		if a.code == http.StatusServiceUnavailable {
			return a.end
		}
	}
	return time.Time{}
}

// longestWaitSince is the longest a request answered after since waited
// after since (or after it started, if later).
func (l *load) longestWaitSince(since time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var longest time.Duration
	for _, a := range l.answers {
		if a.end.After(since) {
			longest = max(longest, a.end.Sub(maxTime(a.start, since)))
		}
	}
	return longest
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (l *load) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *load) unavailableCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unavailable
}

// halt stops the workers and returns the acknowledged message ids.
func (l *load) halt(t *testing.T) []string {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if len(l.unexpected) > 0 {
		t.Fatalf("%d answers were neither 200 nor 503, the first: %s", len(l.unexpected), l.unexpected[0])
	}
	return l.acked
}

// checkDurable reads all of topic and fails unless every acknowledged
// message id is in it exactly once.
func checkDurable(t *testing.T, brokers []string, topic string, acked []string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	ends.Each(func(o kadm.ListedOffset) { total += int(o.Offset) })
	count := map[string]int{}
	for _, r := range consume(t, brokers, topic, total) {
		e, err := event.Unmarshal(r.Value)
		if err != nil {
			t.Fatalf("record at %d/%d is not an event: %v", r.Partition, r.Offset, err)
		}
		count[e.MessageID]++
	}
	var missing, doubled int
	for _, id := range acked {
		switch count[id] {
		case 0:
			if missing++; missing <= 3 {
				t.Errorf("acknowledged event %s is not in %s", id, topic)
			}
		case 1:
		default:
			if doubled++; doubled <= 3 {
				t.Errorf("acknowledged event %s is in %s %d times", id, topic, count[id])
			}
		}
	}
	if missing+doubled > 0 {
		t.Fatalf("of %d acknowledged events %d are missing and %d doubled (%d records in the topic)", len(acked), missing, doubled, total)
	}
	t.Logf("all %d acknowledged events are in %s once (%d records in all)", len(acked), topic, total)
}
