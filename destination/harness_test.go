package destination

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/model"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is a Kafka (kfake, or the real broker for the integration tests)
// with Pulse's topics, and a config whose destinations the test writes.
type env struct {
	t   *testing.T
	cfg *config.Config
	src string // the config's YAML
	cl  *kgo.Client
	emb *kafka.Embedded // the in-process broker; nil on a real one
}

// newEnv parses a config of segments and destinations (yaml) on brokers,
// or on an embedded kfake when brokers is nil.
func newEnv(t *testing.T, brokers []string, yaml string) *env {
	t.Helper()
	prefix := "pulse"
	var emb *kafka.Embedded
	if brokers == nil {
		var err error
		emb, err = kafka.StartEmbedded(kafka.EmbeddedOptions{Partitions: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(emb.Close)
		brokers = emb.Addrs()
	} else {
		prefix = testenv.Topic(t, "dest")
	}
	head := fmt.Sprintf(`kafka:
  brokers: [%q]
  partitions: 2
  topics: {events: %[2]s.events, invalid: %[2]s.invalid, segments: %[2]s.segments, predictions: %[2]s.predictions,
           state: %[2]s.state, seeds: %[2]s.seeds, activations: %[2]s.activations, traits: %[2]s.traits}
keys:
  - {name: admin, key: admin-key, scopes: [admin]}
  - {name: reader, key: read-key, scopes: [read]}
`, brokers[0], prefix)
	cfg, err := config.Parse([]byte(head+yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, cfg: cfg, src: head + yaml, cl: cl, emb: emb}
}

// change makes the record of one enter or exit, unique by n.
func change(seg, entity string, enter bool, n int, features map[string]any) segment.Record {
	return segment.NewRecord(segment.Change{Segment: seg, Enter: enter}, "user", entity,
		time.Date(2025, 3, 1, 12, 0, n, 0, time.UTC), fmt.Sprintf("test/%s/%d", entity, n), features)
}

// produce writes records to the segments topic, keyed by entity id as the
// stream writes them.
func (e *env) produce(recs ...segment.Record) {
	e.t.Helper()
	var krs []*kgo.Record
	for i := range recs {
		v, err := recs[i].Encode()
		if err != nil {
			e.t.Fatal(err)
		}
		krs = append(krs, &kgo.Record{Topic: e.cfg.Kafka.Topics.Segments, Key: []byte(recs[i].EntityID), Value: v})
	}
	if err := e.cl.ProduceSync(context.Background(), krs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

// traitsConfig declares the traits churn_risk and ltv (their model is
// never loaded: destinations only read the traits topic).
const traitsConfig = `
features:
  - {name: orders, agg: count, event: order}
models:
  - {name: churn, path: churn.json, features: [orders]}
traits:
  - {name: churn_risk, model: churn}
  - {name: ltv, model: churn}
`

// traitScore makes the record of trait's change from prev to score (nil:
// none) for entity, unique by n.
func traitScore(trait, entity string, prev, score *float64, n int) model.TraitScore {
	at := time.Date(2025, 3, 1, 12, 0, n, 0, time.UTC)
	s := math.NaN()
	if score != nil {
		s = *score
	}
	return model.TraitScore{ChangeID: model.TraitChangeID(trait, "user", entity, at, s), Trait: trait, Model: "churn",
		Version: "abc123", Entity: "user", ID: entity, Score: score, Previous: prev, At: at}
}

// sp is a score.
func sp(v float64) *float64 { return &v }

// produceTraits writes records to the traits topic, keyed by entity id as
// the stream writes them.
func (e *env) produceTraits(recs ...model.TraitScore) {
	e.t.Helper()
	var krs []*kgo.Record
	for i := range recs {
		v, err := recs[i].Encode()
		if err != nil {
			e.t.Fatal(err)
		}
		krs = append(krs, &kgo.Record{Topic: e.cfg.Kafka.Topics.Traits, Key: []byte(recs[i].ID), Value: v})
	}
	if err := e.cl.ProduceSync(context.Background(), krs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

// testOptions are fast retries, from the start of the topic.
func testOptions() Options {
	return Options{BaseBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, FromStart: true, LagInterval: 50 * time.Millisecond}
}

// run starts the config's destinations; the service is returned for
// pause and resume, stop cancels it and waits.
func (e *env) run() (svc *Service, stop func()) {
	e.t.Helper()
	svc, err := New(e.cfg, testOptions(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return svc, stop
}

// serveAdmin runs svc's admin API on a free port and returns its URL.
func (e *env) serveAdmin(svc *Service) string {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx, ln) }()
	e.t.Cleanup(func() { cancel(); <-done })
	return "http://" + ln.Addr().String()
}

// deadLetters reads n dead letters from topic.
func (e *env) deadLetters(topic string, n int) []DeadLetter {
	e.t.Helper()
	cl, err := kafka.NewClient(e.cfg.Kafka, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []DeadLetter
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			e.t.Fatalf("got %d of %d dead letters", len(out), n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			dl, err := DecodeDeadLetter(r.Value)
			if err != nil {
				e.t.Errorf("dead letter %s: %v", r.Value, err)
			}
			out = append(out, dl)
		})
	}
	return out
}

// hit is one request a receiver answered.
type hit struct {
	key    string // the idempotency key the request carried
	path   string
	header http.Header
	body   []byte
	status int
	at     time.Time
}

// receiver is a real HTTP server on 127.0.0.1 that keeps every request
// and answers from a script: answer gets the key and the attempt (1 for
// the first request with that key) and may sleep, set headers and write
// the status.
type receiver struct {
	srv    *httptest.Server
	keyOf  func(r *http.Request, body []byte) string
	answer func(w http.ResponseWriter, key string, attempt int) int
	mu     sync.Mutex
	hits   []hit
	tries  map[string]int
}

func newReceiver(t *testing.T, keyOf func(*http.Request, []byte) string, answer func(w http.ResponseWriter, key string, attempt int) int) *receiver {
	rc := &receiver{keyOf: keyOf, answer: answer, tries: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key := rc.keyOf(r, body)
		rc.mu.Lock()
		rc.tries[key]++
		attempt := rc.tries[key]
		rc.mu.Unlock()
		status := 200
		if rc.answer != nil {
			status = rc.answer(w, key, attempt)
		}
		rc.mu.Lock()
		rc.hits = append(rc.hits, hit{key: key, path: r.URL.Path, header: r.Header.Clone(), body: body, status: status, at: time.Now()})
		rc.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// snapshot is the requests so far.
func (rc *receiver) snapshot() []hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]hit(nil), rc.hits...)
}

// ok is the requests answered 2xx.
func (rc *receiver) ok() []hit {
	var out []hit
	for _, h := range rc.snapshot() {
		if h.status < 300 {
			out = append(out, h)
		}
	}
	return out
}

func idempotencyKey(r *http.Request, _ []byte) string { return r.Header.Get("Idempotency-Key") }

// call makes a request with key (as a bearer token, "" for none) and
// returns the status and body.
func call(t *testing.T, method, url, key string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}
