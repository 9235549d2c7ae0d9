package destination

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/model"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKafkaDestination: on a real broker, a kafka destination copies each
// change to its topic once, keyed by entity id, with the change id in a
// header, and in each entity's order.
func TestKafkaDestination(t *testing.T) {
	brokers := testenv.Kafka(t)
	out := testenv.Topic(t, "audiences")
	e := newEnv(t, brokers, fmt.Sprintf(`
segments:
  - {name: vip, rule: 'x > 1'}
  - {name: other, rule: 'x > 1'}
destinations:
  - {name: copy, type: kafka, topic: %s, segments: [vip], batch_size: 7}
`, out))
	resp, err := kadm.NewClient(e.cl).CreateTopic(t.Context(), 3, 1, nil, out)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	var recs []segment.Record
	for i := range 60 {
		recs = append(recs, change("vip", fmt.Sprint("u", i%9), i%2 == 0, i, map[string]any{"n": float64(i)}))
	}
	e.produce(append(recs, change("other", "u1", true, 99, nil))...)
	e.run()

	cl, err := kafka.NewClient(e.cfg.Kafka, kgo.ConsumeTopics(out), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < len(recs) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d records copied", len(got), len(recs))
		}
		got = append(got, fs.Records()...)
	}
	seen := map[string]int{}
	byEntity := map[string][]string{}
	for _, r := range got {
		rec, err := segment.DecodeRecord(r.Value)
		if err != nil || string(r.Key) != rec.EntityID || len(r.Headers) != 2 || r.Headers[0].Key != ChangeIDHeader || string(r.Headers[0].Value) != rec.ID || r.Headers[1].Key != KindHeaderKafka || string(r.Headers[1].Value) != KindSegment || rec.Segment != "vip" {
			t.Fatalf("copied record %s key %s headers %v: %v", r.Value, r.Key, r.Headers, err)
		}
		seen[rec.ID]++
		byEntity[rec.EntityID] = append(byEntity[rec.EntityID], rec.ID)
	}
	want := map[string][]string{}
	for _, r := range recs {
		if seen[r.ID] != 1 {
			t.Errorf("change %s copied %d times", r.ID, seen[r.ID])
		}
		want[r.EntityID] = append(want[r.EntityID], r.ID)
	}
	for u := range want {
		if !slices.Equal(byEntity[u], want[u]) {
			t.Errorf("%s: copied in the order %v, want %v", u, byEntity[u], want[u])
		}
	}
}

// TestSIGKILLDestinations kills `pulse destinations` (SIGKILL, its own
// process, on a real broker) while it delivers to a receiver, and starts
// it again: every change is delivered, the ones delivered twice carry the
// same idempotency key and body, and each entity's last deliveries are in
// the order written.
func TestSIGKILLDestinations(t *testing.T) {
	t.Parallel() // waits on brokers and processes more than it computes
	brokers := testenv.Kafka(t)
	bin := testenv.BuildPulse(t)
	rc := newReceiver(t, idempotencyKey, func(http.ResponseWriter, string, int) int {
		time.Sleep(3 * time.Millisecond)
		return 200
	})
	e := newEnv(t, brokers, fmt.Sprintf(`
segments:
  - {name: vip, rule: 'x > 1'}
destinations:
  - name: crm
    type: http
    url: %s
    template: '{"id": {{json .ID}}, "change": {{json .Change}}, "key": {{json .ChangeID}}}'
    segments: [vip]
    start_from: beginning
    concurrency: 2
`, rc.srv.URL))
	const n = 600
	var recs []segment.Record
	want := map[string][]string{}
	for i := range n {
		r := change("vip", fmt.Sprint("u", i%25), i%2 == 0, i, nil)
		recs = append(recs, r)
		want[r.EntityID] = append(want[r.EntityID], r.ID)
	}
	e.produce(recs...)

	dir := t.TempDir()
	path := filepath.Join(dir, "pulse.yaml")
	if err := os.WriteFile(path, []byte(e.src), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "destinations.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("pulse destinations log:\n%s", b)
		}
	}()
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "destinations", "-config", path, "-listen", testenv.FreeAddr(t))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	cmd := start()
	testenv.WaitFor(t, 60*time.Second, "a third delivered", func() bool { return len(distinctOK(rc)) >= n/3 })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	before := len(distinctOK(rc))
	start()
	testenv.WaitFor(t, 120*time.Second, "every change delivered", func() bool { return len(distinctOK(rc)) == n })

	ids := map[string]segment.Record{}
	for _, r := range recs {
		ids[r.ID] = r
	}
	bodies := map[string]string{}
	last := map[string][]string{} // entity -> keys, each at its last delivery
	dups := 0
	for _, h := range rc.ok() {
		r, ok := ids[h.key]
		if !ok {
			t.Fatalf("a delivery with key %q, no change's id", h.key)
		}
		if b, seen := bodies[h.key]; seen {
			dups++
			if b != string(h.body) {
				t.Errorf("change %s delivered as %s and as %s", h.key, b, h.body)
			}
		}
		bodies[h.key] = string(h.body)
		l := slices.DeleteFunc(last[r.EntityID], func(k string) bool { return k == h.key })
		last[r.EntityID] = append(l, h.key)
	}
	for u := range want {
		if !slices.Equal(last[u], want[u]) {
			t.Errorf("%s: delivered in the order %v, want %v", u, last[u], want[u])
		}
	}
	t.Logf("%d changes: %d delivered before the kill, all %d after the restart, %d delivered twice (same key and body)", n, before, n, dups)
}

// TestSIGKILLTraitDestinations is TestSIGKILLDestinations for trait
// changes, read with segment changes by one destination: after a SIGKILL
// and a restart every change of either kind is delivered, the ones
// delivered twice with the same key and body, and each entity's trait
// changes (and its segment changes) last delivered in the order written.
func TestSIGKILLTraitDestinations(t *testing.T) {
	t.Parallel() // waits on brokers and processes more than it computes
	brokers := testenv.Kafka(t)
	bin := testenv.BuildPulse(t)
	rc := newReceiver(t, idempotencyKey, func(http.ResponseWriter, string, int) int {
		time.Sleep(3 * time.Millisecond)
		return 200
	})
	e := newEnv(t, brokers, traitsConfig+fmt.Sprintf(`
segments:
  - {name: vip, rule: 'orders > 1'}
destinations:
  - name: crm
    type: http
    url: %s
    template: '{"kind": {{json .Kind}}, "id": {{json .ID}}, "trait": {{json .Trait}}, "score": {{json .Score}}, "key": {{json .ChangeID}}}'
    segments: [vip]
    traits: [churn_risk]
    start_from: beginning
    concurrency: 2
`, rc.srv.URL))
	const n = 600
	var traits []model.TraitScore
	var segs []segment.Record
	kindOf := map[string]string{}
	entityOf := map[string]string{}
	want := map[string][]string{} // kind/entity -> keys in order
	prev := map[string]*float64{}
	for i := range n {
		u := fmt.Sprint("u", i%25)
		if i%3 == 0 {
			r := change("vip", u, i%2 == 0, i, nil)
			segs = append(segs, r)
			kindOf[r.ID], entityOf[r.ID] = KindSegment, u
			want["segment/"+u] = append(want["segment/"+u], r.ID)
			continue
		}
		s := sp(float64(i) / n) // every step moves the rounded score
		r := traitScore("churn_risk", u, prev[u], s, i)
		prev[u] = s
		traits = append(traits, r)
		kindOf[r.ChangeID], entityOf[r.ChangeID] = KindTrait, u
		want["trait/"+u] = append(want["trait/"+u], r.ChangeID)
	}
	e.produceTraits(traits...)
	e.produce(segs...)

	dir := t.TempDir()
	path := filepath.Join(dir, "pulse.yaml")
	if err := os.WriteFile(path, []byte(e.src), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "destinations.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("pulse destinations log:\n%s", b)
		}
	}()
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "destinations", "-config", path, "-listen", testenv.FreeAddr(t))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	cmd := start()
	testenv.WaitFor(t, 60*time.Second, "a third delivered", func() bool { return len(distinctOK(rc)) >= n/3 })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	before := len(distinctOK(rc))
	start()
	testenv.WaitFor(t, 120*time.Second, "every change delivered", func() bool { return len(distinctOK(rc)) == n })

	bodies := map[string]string{}
	last := map[string][]string{} // kind/entity -> keys, each at its last delivery
	dups := 0
	for _, h := range rc.ok() {
		kind, ok := kindOf[h.key]
		if !ok {
			t.Fatalf("a delivery with key %q, no change's id", h.key)
		}
		var body struct{ Kind, Key string }
		if err := json.Unmarshal(h.body, &body); err != nil || body.Kind != kind || body.Key != h.key {
			t.Fatalf("change %s (%s) delivered as %s: %v", h.key, kind, h.body, err)
		}
		if b, seen := bodies[h.key]; seen {
			dups++
			if b != string(h.body) {
				t.Errorf("change %s delivered as %s and as %s", h.key, b, h.body)
			}
		}
		bodies[h.key] = string(h.body)
		k := kind + "/" + entityOf[h.key]
		l := slices.DeleteFunc(last[k], func(x string) bool { return x == h.key })
		last[k] = append(l, h.key)
	}
	for k := range want {
		if !slices.Equal(last[k], want[k]) {
			t.Errorf("%s: delivered in the order %v, want %v", k, last[k], want[k])
		}
	}
	t.Logf("%d changes (%d trait, %d segment): %d delivered before the kill, all after the restart, %d delivered twice (same key and body)",
		n, len(traits), len(segs), before, dups)
}
