package webtest

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/stream"
	"github.com/twmb/franz-go/pkg/kgo"
)

// stack is the e-commerce example in process for a dashboard test: its
// topics on kfake (two partitions), the online store on Pebble in a
// temporary directory, and a stream processor over them. A test builds
// the servers it needs on top (ingest, scorer, the live feed...) and
// starts them with run; everything stops when the test ends.
type stack struct {
	t        *testing.T
	cfg      *config.Config
	log      *slog.Logger
	ctx      context.Context
	producer *kgo.Client
	store    featurestore.Store
	proc     *stream.Processor
}

// newStack loads the example's config, lets edit change it, and opens
// the stack's parts.
func newStack(t *testing.T, edit func(*config.Config)) *stack {
	t.Helper()
	cfg, err := config.Load("../../examples/ecommerce/pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(cfg)
	}
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	cfg.Kafka.Brokers = emb.Addrs()
	cfg.Kafka.Partitions = 2
	cfg.DataDir = t.TempDir()
	cfg.Store.Path = cfg.DataDir + "/store"
	s := &stack{t: t, cfg: cfg, log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s.ctx = ctx
	if s.producer, err = kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.producer.Close)
	if err := kafka.EnsureTopics(ctx, s.producer, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	if s.store, err = featurestore.Open(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.store.Close() })
	if s.proc, err = stream.New(cfg, s.store, stream.Options{Log: s.log}); err != nil {
		t.Fatal(err)
	}
	return s
}

// listen is a listener on a free loopback port.
func (s *stack) listen() net.Listener {
	s.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	return ln
}

// run starts the stream processor and services, each until the test
// ends; one that fails before then fails the test. At the end the stack
// waits for every one to return before it closes the store and the
// broker.
func (s *stack) run(services ...func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(s.ctx)
	services = append([]func(context.Context) error{s.proc.Run}, services...)
	done := make(chan struct{}, len(services))
	for _, svc := range services {
		go func() {
			if err := svc(ctx); err != nil && ctx.Err() == nil {
				s.t.Errorf("service stopped: %v", err)
			}
			done <- struct{}{}
		}()
	}
	s.t.Cleanup(func() {
		cancel()
		for range services {
			<-done
		}
	})
}

// post sends events (JSON objects) in one batch to ingest at url, with
// the example's write key, and wants a 200.
func (s *stack) post(url string, events ...string) {
	s.t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/batch", strings.NewReader(`{"batch":[`+strings.Join(events, ",")+`]}`))
	req.SetBasicAuth("dev-write-key", "")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		s.t.Fatalf("ingest answered %d", resp.StatusCode)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
