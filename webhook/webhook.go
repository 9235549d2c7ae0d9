package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	json "github.com/goccy/go-json"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Group is the consumer group of the webhook service (kafka.WebhooksGroup,
// pulse-webhooks).
const Group = kafka.WebhooksGroup

// DeadLetterTopic names the topic of records whose delivery failed for
// good (kafka.WebhooksDeadTopic: pulse.webhooks.dead by default).
func DeadLetterTopic(k config.Kafka) string { return kafka.WebhooksDeadTopic(k) }

// DeadLetter is the JSON value of a dead-letter record (keyed by entity id).
type DeadLetter struct {
	Segment  string          `json:"segment"`
	URL      string          `json:"url"`
	Error    string          `json:"error"`
	Status   int             `json:"status,omitempty"` // the last HTTP status, 0 when none
	Attempts int             `json:"attempts"`
	First    time.Time       `json:"first_attempt_at"`
	Dead     time.Time       `json:"dead_at"`
	Record   json.RawMessage `json:"record"` // the segment record, as on the topic
}

// Options tune the service; zero values take the defaults (EnsureDefaults).
type Options struct {
	// Client sends the requests, overriding the default: an http.Client
	// that follows no redirect (a 3xx answer counts as a failure). Each
	// request also has its webhook's timeout.
	Client *http.Client
	// BaseBackoff is the wait before the first retry, overriding the
	// default 1s. It doubles each retry, and each wait is jittered down to
	// half of it; a Retry-After answer may lengthen a wait up to MaxBackoff.
	BaseBackoff time.Duration
	// MaxBackoff caps one wait, overriding the default 2m.
	MaxBackoff time.Duration
	// FromStart makes a new consumer group start at the beginning of the
	// topic, overriding the default: the end, so turning webhooks on does not
	// replay every past change.
	FromStart bool
	// Log is the logger, overriding the default slog.Default().
	Log *slog.Logger
}

// EnsureDefaults sets every zero field to its default.
func (o *Options) EnsureDefaults() {
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.BaseBackoff <= 0 {
		o.BaseBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 2 * time.Minute
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Service consumes the segments topic and delivers webhooks. Run it once.
type Service struct {
	cfg   *config.Config
	opts  Options
	log   *slog.Logger
	hooks map[string]*config.Webhook // by segment name
	dead  string
}

var (
	delivered = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_webhook_delivered_total",
		Help: "Segment changes delivered (answered 2xx), by segment.",
	}, []string{"segment"})
	failedAttempts = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_webhook_failed_attempts_total",
		Help: "Delivery attempts that failed, by segment and reason (status code, timeout, network).",
	}, []string{"segment", "reason"})
	deadLettered = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_webhook_dead_lettered_total",
		Help: "Segment changes sent to the dead-letter topic after the last retry, by segment.",
	}, []string{"segment"})
	attemptSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pulse_webhook_attempt_seconds",
		Help:    "Time of one delivery attempt, request to answer, by segment.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
	}, []string{"segment"})
	deliveryLag = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "pulse_webhook_delivery_lag_seconds",
		Help:    "Time from the record's write to pulse.segments to its successful delivery, retries included.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 18),
	})
)

// New builds the service for cfg's segments with a webhook.
func New(cfg *config.Config, opts Options) *Service {
	opts.EnsureDefaults()
	s := &Service{cfg: cfg, opts: opts, log: opts.Log.With("service", "webhooks"), hooks: map[string]*config.Webhook{}, dead: DeadLetterTopic(cfg.Kafka)}
	for i := range cfg.Segments {
		if w := cfg.Segments[i].Webhook; w != nil {
			s.hooks[cfg.Segments[i].Name] = w
		}
	}
	return s
}

// Enabled reports whether any segment has a webhook.
func (s *Service) Enabled() bool { return len(s.hooks) > 0 }

// Run delivers until ctx ends. With no webhook configured it returns at once.
func (s *Service) Run(ctx context.Context) error {
	if !s.Enabled() {
		s.log.Info("no segment has a webhook; webhook delivery is off")
		return nil
	}
	reset := kgo.NewOffset().AtEnd()
	if s.opts.FromStart {
		reset = kgo.NewOffset().AtStart()
	}
	opts := append(kafka.ProducerOpts(),
		kgo.ConsumerGroup(Group),
		kgo.ConsumeTopics(s.cfg.Kafka.Topics.Segments),
		kgo.ConsumeResetOffset(reset),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Offsets are committed after delivery. A partition revoked while
		// its records are retried is not committed: its new owner delivers
		// them again (at least once), rather than holding the rebalance for
		// minutes of backoff.
		kgo.DisableAutoCommit(),
	)
	cl, err := kafka.NewClient(s.cfg.Kafka, opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if *s.cfg.Kafka.CreateTopics {
		if err := s.createDeadLetterTopic(ctx, cl); err != nil {
			return err
		}
	}
	s.log.Info("webhooks delivering", "segments", len(s.hooks), "dead_letter_topic", s.dead)
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			s.log.Warn("webhook fetch failed", "topic", t, "partition", p, "err", err)
		})
		if err := s.deliverAll(ctx, cl, fs); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
			// Delivered but not committed: they are delivered again after
			// the next rebalance, which at-least-once allows.
			s.log.Warn("webhook offsets not committed", "err", err)
		}
	}
}

func (s *Service) createDeadLetterTopic(ctx context.Context, cl *kgo.Client) error {
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, int32(s.cfg.Kafka.Partitions), int16(s.cfg.Kafka.ReplicationFactor), nil, s.dead)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("cannot create topic %s: %w", s.dead, err)
	}
	return nil
}

// deliverAll delivers a poll's records: partitions in parallel, each
// partition's records in order, so one entity's enter comes before its exit.
func (s *Service) deliverAll(ctx context.Context, cl *kgo.Client, fs kgo.Fetches) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		wg.Go(func() {
			for _, r := range p.Records {
				if err := s.deliverRecord(ctx, cl, r); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	})
	wg.Wait()
	return first
}

// deliverRecord POSTs r to its segment's webhook, retrying, and
// dead-letters it after the last failure. An error means r was neither
// delivered nor dead-lettered (ctx ended, or Kafka refused the dead
// letter): nothing may be committed.
func (s *Service) deliverRecord(ctx context.Context, cl *kgo.Client, r *kgo.Record) error {
	head, _, err := segment.DecodeRecordRaw(r.Value)
	if err != nil {
		return nil // not a segment record: nothing to deliver
	}
	hook := s.hooks[head.Segment]
	if hook == nil {
		return nil
	}
	first := time.Now()
	var lastErr error
	status := 0
	attempts := 0
	for attempt := 1; attempt <= 1+hook.Retries(); attempt++ {
		if attempt > 1 {
			if err := sleep(ctx, s.backoff(attempt-1, lastErr)); err != nil {
				return err
			}
		}
		attempts = attempt
		var retry bool
		status, retry, lastErr = s.attempt(ctx, hook, head.Segment, head.Change, head.ID, attempt, r.Value)
		if lastErr == nil {
			delivered.WithLabelValues(head.Segment).Inc()
			deliveryLag.Observe(time.Since(r.Timestamp).Seconds())
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failedAttempts.WithLabelValues(head.Segment, reason(status, lastErr)).Inc()
		s.log.Debug("webhook attempt failed", "segment", head.Segment, "url", hook.URL, "attempt", attempt, "err", lastErr)
		if !retry {
			break
		}
	}
	dl, _ := json.Marshal(DeadLetter{
		Segment: head.Segment, URL: hook.URL, Error: lastErr.Error(), Status: status,
		Attempts: attempts, First: first.UTC(), Dead: time.Now().UTC(), Record: r.Value,
	})
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: s.dead, Key: r.Key, Value: dl}).FirstErr(); err != nil {
		return fmt.Errorf("cannot write dead letter to %s: %w", s.dead, err)
	}
	deadLettered.WithLabelValues(head.Segment).Inc()
	s.log.Warn("webhook dead-lettered", "segment", head.Segment, "url", hook.URL, "attempts", attempts, "err", lastErr)
	return nil
}

// statusError is a non-2xx answer.
type statusError struct {
	status     int
	retryAfter time.Duration
}

func (e *statusError) Error() string {
	return fmt.Sprintf("receiver answered %d %s", e.status, http.StatusText(e.status))
}

// attempt makes one signed POST. retry says whether another try may help.
func (s *Service) attempt(ctx context.Context, hook *config.Webhook, segment, change, id string, n int, body []byte) (status int, retry bool, err error) {
	actx, cancel := context.WithTimeout(ctx, hook.Timeout.D())
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, hook.URL, bytes.NewReader(body))
	if err != nil {
		return 0, false, fmt.Errorf("cannot build request: %w", err)
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pulse-webhooks/1")
	req.Header.Set(TimestampHeader, strconv.FormatInt(ts, 10))
	req.Header.Set(SignatureHeader, Sign(hook.Secret, ts, body))
	req.Header.Set(DeliveryHeader, id)
	req.Header.Set(SegmentHeader, segment)
	req.Header.Set(ChangeHeader, change)
	req.Header.Set(AttemptHeader, strconv.Itoa(n))
	start := time.Now()
	resp, err := s.opts.Client.Do(req)
	attemptSeconds.WithLabelValues(segment).Observe(time.Since(start).Seconds())
	if err != nil {
		return 0, true, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, false, nil
	}
	se := &statusError{status: resp.StatusCode}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		se.retryAfter = time.Duration(secs) * time.Second
	}
	retry = resp.StatusCode == 408 || resp.StatusCode == 429 || resp.StatusCode >= 500
	return resp.StatusCode, retry, se
}

// backoff is the wait before retry n (1-based): BaseBackoff doubled per
// retry, capped, with "equal jitter" (half fixed, half random) so many
// failing deliveries do not retry in step. A receiver's Retry-After wins
// when it asks for longer, up to MaxBackoff.
func (s *Service) backoff(n int, last error) time.Duration {
	d := s.opts.BaseBackoff << min(n-1, 30)
	if d <= 0 || d > s.opts.MaxBackoff {
		d = s.opts.MaxBackoff
	}
	d = d/2 + rand.N(d/2+1)
	var se *statusError
	if errors.As(last, &se) && se.retryAfter > d {
		d = min(se.retryAfter, s.opts.MaxBackoff)
	}
	return d
}

func reason(status int, err error) string {
	switch {
	case status != 0:
		return strconv.Itoa(status)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "network"
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
