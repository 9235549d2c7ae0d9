package webhook

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/destination"
	"github.com/pulse-rt/pulse/kafka"
)

// Group is the consumer group of the webhook service (kafka.WebhooksGroup,
// pulse-webhooks).
const Group = kafka.WebhooksGroup

// DeadLetterTopic names the topic of records whose delivery failed for
// good (kafka.WebhooksDeadTopic: pulse.webhooks.dead by default).
func DeadLetterTopic(k config.Kafka) string { return kafka.WebhooksDeadTopic(k) }

// DeadLetter is the JSON value of a dead-letter record (keyed by entity
// id): the destinations' one dead-letter type, its destination
// "webhook:<segment>".
type DeadLetter = destination.DeadLetter

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
		o.Client = destination.NewHTTPClient()
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
	runner *destination.Runner
	routes int
	log    *slog.Logger
}

// RouteName is the destination label of segment's webhook in the
// destination metrics and dead letters.
func RouteName(segment string) string { return "webhook:" + segment }

// New builds the service for cfg's segments with a webhook.
func New(cfg *config.Config, opts Options) *Service {
	opts.EnsureDefaults()
	var routes []*destination.Route
	for i := range cfg.Segments {
		s := &cfg.Segments[i]
		w := s.Webhook
		if w == nil {
			continue
		}
		name := s.Name
		routes = append(routes, &destination.Route{
			Name: RouteName(name), Type: config.DestinationWebhook, Target: w.URL,
			Match:      func(seg string) bool { return seg == name },
			Sink:       &destination.Webhook{URL: w.URL, Secret: w.Secret, Client: opts.Client},
			MaxRetries: w.Retries(), Timeout: w.Timeout.D(), BatchSize: 1, Concurrency: 1,
		})
	}
	log := opts.Log.With("service", "webhooks")
	r := destination.NewRunner(cfg, routes, destination.Options{
		Name: "webhooks", Group: Group, DeadTopic: DeadLetterTopic(cfg.Kafka),
		BaseBackoff: opts.BaseBackoff, MaxBackoff: opts.MaxBackoff, FromStart: opts.FromStart, Log: log,
	})
	return &Service{runner: r, routes: len(routes), log: log}
}

// Enabled reports whether any segment has a webhook.
func (s *Service) Enabled() bool { return s.routes > 0 }

// Run delivers until ctx ends. With no webhook configured it returns at once.
func (s *Service) Run(ctx context.Context) error {
	if !s.Enabled() {
		s.log.Info("no segment has a webhook; webhook delivery is off")
		return nil
	}
	return s.runner.Run(ctx)
}
