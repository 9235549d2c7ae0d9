package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/segment"
	"github.com/pulse-rt/pulse/webhook"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestSignVerify(t *testing.T) {
	body := []byte(`{"segment":"a","change":"enter"}`)
	now := time.Unix(1_700_000_000, 0)
	headers := func(secret string, ts int64, b []byte) http.Header {
		h := http.Header{}
		h.Set(webhook.TimestampHeader, fmt.Sprint(ts))
		h.Set(webhook.SignatureHeader, webhook.Sign(secret, ts, b))
		return h
	}
	f := func(h http.Header, b []byte, want error) {
		t.Helper()
		if err := webhook.Verify("s3cret", h, b, now, 5*time.Minute); err != want {
			t.Fatalf("Verify = %v, want %v", err, want)
		}
	}
	f(headers("s3cret", now.Unix(), body), body, nil)
	f(headers("s3cret", now.Unix()-60, body), body, nil)
	f(headers("other", now.Unix(), body), body, webhook.ErrBadSignature)
	f(headers("s3cret", now.Unix(), body), append([]byte(" "), body...), webhook.ErrBadSignature)
	f(headers("s3cret", now.Unix()-3600, body), body, webhook.ErrTooOld)
	f(http.Header{}, body, webhook.ErrNoSignature)
	// A replay with a fresh timestamp but the old signature fails.
	h := headers("s3cret", now.Unix()-3600, body)
	h.Set(webhook.TimestampHeader, fmt.Sprint(now.Unix()))
	f(h, body, webhook.ErrBadSignature)
	// The documented construction: HMAC-SHA256 of "<timestamp>.<body>".
	m := hmac.New(sha256.New, []byte("k"))
	m.Write([]byte("1.b"))
	if got, want := webhook.Sign("k", 1, []byte("b")), "sha256="+hex.EncodeToString(m.Sum(nil)); got != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
}

// receiver is a real HTTP server on 127.0.0.1 that verifies signatures and
// answers from a script.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string
	mu     sync.Mutex
	calls  map[string][]int // change id -> statuses answered
	bodies map[string]segment.Record
	bad    []string
	answer func(id string, attempt int) int
}

func newReceiver(t *testing.T, secret string, answer func(id string, attempt int) int) *receiver {
	rc := &receiver{t: t, secret: secret, calls: map[string][]int{}, bodies: map[string]segment.Record{}, answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id := r.Header.Get(webhook.DeliveryHeader)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if err := webhook.Verify(rc.secret, r.Header, body, time.Now(), time.Minute); err != nil {
			rc.bad = append(rc.bad, err.Error())
			w.WriteHeader(401)
			return
		}
		var rec segment.Record
		if err := json.Unmarshal(body, &rec); err != nil || rec.ID != id || r.Header.Get(webhook.ChangeHeader) != rec.Change {
			rc.bad = append(rc.bad, fmt.Sprintf("body %s does not match headers %v", body, r.Header))
		}
		status := rc.answer(id, len(rc.calls[id])+1)
		rc.calls[id] = append(rc.calls[id], status)
		if status < 300 {
			rc.bodies[id] = rec
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) snapshot() (map[string][]int, []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	calls := map[string][]int{}
	for k, v := range rc.calls {
		calls[k] = append([]int(nil), v...)
	}
	return calls, append([]string(nil), rc.bad...)
}

type env struct {
	t   *testing.T
	cfg *config.Config
	cl  *kgo.Client
}

func newEnv(t *testing.T, yaml string) *env {
	t.Helper()
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	cfg, err := config.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kafka.Brokers = emb.Addrs()
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, cfg: cfg, cl: cl}
}

func (e *env) send(seg string, n int) []segment.Record {
	e.t.Helper()
	var out []segment.Record
	for i := range n {
		id := fmt.Sprint(i)
		rec := segment.NewRecord(segment.Change{}, "user", id, time.Now(), fmt.Sprintf("%s/%d/%d", seg, i, time.Now().UnixNano()), nil)
		rec.Segment, rec.Change = seg, []string{"enter", "exit"}[i%2]
		v, _ := json.Marshal(rec)
		if err := e.cl.ProduceSync(context.Background(), &kgo.Record{Topic: e.cfg.Kafka.Topics.Segments, Key: []byte(id), Value: v}).FirstErr(); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, rec)
	}
	return out
}

// run starts the service; the returned stop cancels it and waits.
func (e *env) run() (stop func()) {
	svc := webhook.New(e.cfg, webhook.Options{BaseBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, FromStart: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Run: %v", err)
		}
	}
	e.t.Cleanup(stop)
	return stop
}

func (e *env) deadLetters(n int) []webhook.DeadLetter {
	e.t.Helper()
	cl, err := kafka.NewClient(e.cfg.Kafka, kgo.ConsumeTopics(webhook.DeadLetterTopic(e.cfg.Kafka)), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out []webhook.DeadLetter
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			e.t.Fatalf("got %d of %d dead letters", len(out), n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			var dl webhook.DeadLetter
			if err := json.Unmarshal(r.Value, &dl); err != nil {
				e.t.Errorf("dead letter %s: %v", r.Value, err)
			}
			out = append(out, dl)
		})
	}
	return out
}

// committed waits for the group to have committed the end of the segments
// topic on every partition.
func (e *env) waitCommitted() {
	e.t.Helper()
	adm := kadm.NewClient(e.cl)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		ends, err1 := adm.ListEndOffsets(ctx, e.cfg.Kafka.Topics.Segments)
		got, err2 := adm.FetchOffsets(ctx, webhook.Group)
		if err1 == nil && err2 == nil {
			all := true
			ends.Each(func(o kadm.ListedOffset) {
				c, ok := got.Lookup(o.Topic, o.Partition)
				if o.Offset > 0 && (!ok || c.At < o.Offset) {
					all = false
				}
			})
			if all {
				return
			}
		}
		if ctx.Err() != nil {
			e.t.Fatalf("offsets not committed: ends %v, committed %v (%v %v)", ends, got, err1, err2)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDeliverRetryAndDeadLetter(t *testing.T) {
	ok := newReceiver(t, "sec-a", func(id string, attempt int) int {
		if attempt <= 2 {
			return 500 // the first two tries fail
		}
		return 204
	})
	down := newReceiver(t, "sec-b", func(string, int) int { return 503 })
	rejects := newReceiver(t, "sec-c", func(string, int) int { return 400 })
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(3 * time.Second):
		}
	}))
	defer slow.Close()
	e := newEnv(t, fmt.Sprintf(`
segments:
  - name: a
    rule: 'x > 1'
    webhook: {url: %q, secret: sec-a, max_retries: 3, timeout: 2s}
  - name: b
    rule: 'x > 1'
    webhook: {url: %q, secret: sec-b, max_retries: 2}
  - name: c
    rule: 'x > 1'
    webhook: {url: %q, secret: sec-c, max_retries: 5}
  - name: slow
    rule: 'x > 1'
    webhook: {url: %q, secret: s, max_retries: 1, timeout: 100ms}
  - name: quiet
    rule: 'x > 1'
`, ok.srv.URL, down.srv.URL, rejects.srv.URL, slow.URL))
	e.run()
	as := e.send("a", 4)
	bs := e.send("b", 2)
	cs := e.send("c", 1)
	e.send("slow", 1)
	e.send("quiet", 3)

	dls := e.deadLetters(4)
	e.waitCommitted()
	calls, bad := ok.snapshot()
	if len(bad) > 0 {
		t.Fatalf("receiver a saw bad deliveries: %v", bad)
	}
	for _, r := range as {
		if got := fmt.Sprint(calls[r.ID]); got != "[500 500 204]" {
			t.Fatalf("a %s: answers %s, want [500 500 204]", r.ID, got)
		}
		if ok.bodies[r.ID].Change != r.Change || ok.bodies[r.ID].EntityID != r.EntityID {
			t.Fatalf("a %s: body %+v, want %+v", r.ID, ok.bodies[r.ID], r)
		}
	}
	bcalls, bad := down.snapshot()
	if len(bad) > 0 {
		t.Fatalf("receiver b saw bad deliveries: %v", bad)
	}
	for _, r := range bs {
		if len(bcalls[r.ID]) != 3 {
			t.Fatalf("b %s: %d attempts, want 1 + max_retries = 3", r.ID, len(bcalls[r.ID]))
		}
	}
	ccalls, _ := rejects.snapshot()
	if len(ccalls[cs[0].ID]) != 1 {
		t.Fatalf("c: a 400 is not retried, got %d attempts", len(ccalls[cs[0].ID]))
	}
	want := map[string]int{"b": 3, "c": 1, "slow": 2}
	wantStatus := map[string]int{"b": 503, "c": 400, "slow": 0}
	seen := map[string]int{}
	for _, dl := range dls {
		var rec segment.Record
		json.Unmarshal(dl.Record, &rec)
		if dl.Attempts != want[dl.Segment] || rec.Segment != dl.Segment || dl.Error == "" || dl.Status != wantStatus[dl.Segment] {
			t.Fatalf("dead letter %+v", dl)
		}
		seen[dl.Segment]++
	}
	if seen["b"] != 2 || seen["c"] != 1 || seen["slow"] != 1 {
		t.Fatalf("dead letters by segment: %v", seen)
	}
}

// A change is committed only once delivered: stopping the service while
// the receiver is down and starting it again delivers it.
func TestAtLeastOnceAcrossRestart(t *testing.T) {
	var mu sync.Mutex
	up := false
	rc := newReceiver(t, "s", func(string, int) int {
		mu.Lock()
		defer mu.Unlock()
		if up {
			return 200
		}
		return 502
	})
	e := newEnv(t, fmt.Sprintf(`
segments:
  - name: a
    rule: 'x > 1'
    webhook: {url: %q, secret: s, max_retries: 100}
`, rc.srv.URL))
	stop := e.run()
	recs := e.send("a", 2)
	testenv.WaitFor(t, 15*time.Second, "failing attempts", func() bool {
		calls, _ := rc.snapshot()
		return len(calls[recs[0].ID]) >= 2
	})
	stop()

	mu.Lock()
	up = true
	mu.Unlock()
	e.run()
	testenv.WaitFor(t, 15*time.Second, "delivery after restart", func() bool {
		calls, _ := rc.snapshot()
		for _, r := range recs {
			c := calls[r.ID]
			if len(c) == 0 || c[len(c)-1] != 200 {
				return false
			}
		}
		return true
	})
	e.waitCommitted()
}
