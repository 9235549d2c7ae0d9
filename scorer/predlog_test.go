package scorer_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func embeddedKafka(t *testing.T, cfg *config.Config) *kafka.Embedded {
	t.Helper()
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	cfg.Kafka.Brokers = emb.Addrs()
	return emb
}

func producer(t *testing.T, cfg *config.Config, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kafka.NewClient(cfg.Kafka, append(kafka.ProducerOpts(), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	return cl
}

func TestPredictionLog(t *testing.T) {
	cfg := newConfig(t, testConfig)
	embeddedKafka(t, cfg)
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"612": buyer()}, nil)
	h := start(t, cfg, st, scorer.WithPredictionLog(producer(t, cfg)))

	_, body := h.do("POST", "/v1/predict", "read-key", `{"model":"purchase_propensity","features":[{"user":{"id":612}},{"user":{"id":"ghost","orders_30d":2}}]}`)
	answers := decodeAnswers(t, body)

	cons, err := kafka.NewClient(cfg.Kafka, kgo.ConsumeTopics(cfg.Kafka.Topics.Predictions), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var recs []scorer.LogRecord
	var keys []string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(recs) < 2 && ctx.Err() == nil {
		cons.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var lr scorer.LogRecord
			if err := json.Unmarshal(r.Value, &lr); err != nil {
				t.Errorf("record is not JSON: %v: %s", err, r.Value)
			}
			recs = append(recs, lr)
			keys = append(keys, string(r.Key))
		})
	}
	if len(recs) != 2 {
		t.Fatalf("got %d prediction records, want 2", len(recs))
	}
	byUUID := map[string]scorer.LogRecord{}
	for _, r := range recs {
		byUUID[r.UUID] = r
	}
	used := byUUID[answers[0].UUID]
	if used.Model != "purchase_propensity" || len(used.Version) != 12 || used.Entity != "user" || used.ID != "612" ||
		!used.ModelUsed || used.Score == nil || *used.Score != *answers[0].Score || used.Prediction != answers[0].Prediction ||
		time.Since(used.At) > time.Minute || len(used.Features) != 6 || *used.Features["revenue_30d"] != 640 {
		t.Errorf("logged prediction: %+v", used)
	}
	unused := byUUID[answers[1].UUID]
	if unused.ModelUsed || unused.ID != "ghost" || unused.Score != nil || unused.Prediction != "no" ||
		*unused.Features["orders_30d"] != 2 || unused.Features["revenue_30d"] != nil {
		t.Errorf("logged default: %+v", unused)
	}
	if strings.Join(keys, ",") != "612,ghost" && strings.Join(keys, ",") != "ghost,612" {
		t.Errorf("record keys %v, want the entity ids", keys)
	}
}

// TestPredictionLogSheds blocks the broker: answers must not wait, and what
// cannot be queued is counted as shed.
func TestPredictionLogSheds(t *testing.T) {
	cfg := newConfig(t, testConfig)
	emb := embeddedKafka(t, cfg)
	release := make(chan struct{})
	emb.Cluster().ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		emb.Cluster().KeepControl()
		emb.Cluster().SleepControl(func() { <-release })
		return nil, nil, false
	})
	defer close(release)
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"612": buyer()}, nil)
	h := start(t, cfg, st, scorer.WithPredictionLog(producer(t, cfg, kgo.MaxBufferedRecords(2))), scorer.WithLogQueue(4))

	shed := testenv.Gathered(t, "pulse_scorer_prediction_log_shed_total", nil)
	rows := strings.TrimSuffix(strings.Repeat(`{"user":{"id":612}},`, 200), ",")
	// The broker stays stuck until the test ends, so a hot path that
	// waited on it would not answer at all: each request must be answered
	// while it is stuck (the client's deadline only turns a hang into a
	// failure).
	client := &http.Client{Timeout: 60 * time.Second}
	for range 5 {
		req, err := http.NewRequest("POST", h.url+"/v1/predict",
			strings.NewReader(`{"model":"purchase_propensity","features":[`+rows+`]}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer read-key")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("predict while Kafka is stuck: %v: the hot path waits on the broker", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(decodeAnswers(t, string(body))) != 200 {
			t.Fatalf("predict while Kafka is stuck: %d %v", resp.StatusCode, err)
		}
	}
	// 1000 records; only a handful can wait: the queue (4), the producer's
	// buffer (2), the records handed over between the two, and what the
	// producer drained before the broker stopped answering. The bound is
	// loose on purpose: the point is that nearly all are shed, none waited.
	if got := testenv.Gathered(t, "pulse_scorer_prediction_log_shed_total", nil) - shed; got < 1000-32 {
		t.Errorf("shed %v records, want at least %d", got, 1000-32)
	}
}
