package destination

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/model"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
)

// Service runs the config's destinations: one Runner each, in its own
// consumer group (kafka.DestinationGroup), dead letters to
// kafka.DestinationsDeadTopic. Serve adds the admin API.
type Service struct {
	cfg     *config.Config
	opts    Options
	dests   []*config.Destination
	runners []*Runner
	byName  map[string]*Runner
	closers []func()
}

// New builds the runners of cfg's destinations; o's Name, Group and
// DeadTopic are set per destination. It fails on a destination that
// cannot be built (a template that cannot render a change, a Kafka client
// that cannot be made).
func New(cfg *config.Config, o Options, client *http.Client) (*Service, error) {
	o.EnsureDefaults()
	s := &Service{cfg: cfg, opts: o, byName: map[string]*Runner{}}
	for i := range cfg.Destinations {
		d := &cfg.Destinations[i]
		rt, closer, err := NewRoute(cfg, d, client)
		if err != nil {
			s.Close()
			return nil, err
		}
		if closer != nil {
			s.closers = append(s.closers, closer)
		}
		ro := o
		ro.Name, ro.Group, ro.DeadTopic = d.Name, kafka.DestinationGroup(d.Name), kafka.DestinationsDeadTopic(cfg.Kafka)
		ro.FromStart = o.FromStart || d.StartFrom == "beginning"
		r := NewRunner(cfg, []*Route{rt}, ro)
		s.dests = append(s.dests, d)
		s.runners = append(s.runners, r)
		s.byName[d.Name] = r
	}
	return s, nil
}

// NewRoute builds destination d's route: its sink and policy. The closer,
// when not nil, releases what the sink holds (a Kafka client). A nil
// client is NewHTTPClient().
func NewRoute(cfg *config.Config, d *config.Destination, client *http.Client) (*Route, func(), error) {
	if client == nil {
		client = NewHTTPClient()
	}
	rt := &Route{
		Name: d.Name, Type: d.Type, Target: d.URL,
		MaxRetries: d.Retries(), Timeout: d.Timeout.D(), BatchSize: d.BatchSize, Concurrency: d.Concurrency,
		RequestsPerSecond: d.RateLimit.RequestsPerSecond, RecordsPerSecond: d.RateLimit.RecordsPerSecond,
		TraitFilter: TraitFilter{Decimals: d.TraitDecimals(), Thresholds: d.Thresholds},
	}
	if len(d.Segments) > 0 {
		rt.Match = d.Matches
	}
	if len(d.Traits) > 0 {
		rt.MatchTrait = d.MatchesTrait
	}
	var closer func()
	switch d.Type {
	case config.DestinationWebhook:
		rt.Sink = &Webhook{URL: d.URL, Secret: d.Secret, Headers: d.Headers, Client: client}
	case config.DestinationSegment:
		rt.Sink = &SegmentAPI{URL: d.URL, WriteKey: d.WriteKey, Identify: d.Identify, TraitTrack: d.TraitTrack, Decimals: d.TraitDecimals(), Client: client}
	case config.DestinationHTTP:
		tmpl, err := d.ParseTemplate()
		if err != nil {
			return nil, nil, fmt.Errorf("destination %s: %w", d.Name, err)
		}
		urlTmpl, err := d.ParseURL()
		if err != nil {
			return nil, nil, fmt.Errorf("destination %s: %w", d.Name, err)
		}
		h := &HTTP{URL: d.URL, URLTemplate: urlTmpl, Method: d.Method, Headers: d.Headers, Auth: d.Auth, Template: tmpl,
			Decimals: d.TraitDecimals(), Client: client}
		// A template that names a field a change lacks fails here, at
		// start, rather than dead-lettering every change: a sample of
		// each kind it takes.
		var samples []Change
		if rt.Match != nil {
			samples = append(samples, SegmentChange(segment.Record{ID: "0", Segment: "s", Entity: "user", EntityID: "1", Change: segment.ChangeEnter, At: time.Unix(0, 0)}, nil))
		}
		if rt.MatchTrait != nil {
			score := 0.5
			samples = append(samples, TraitChange(&model.TraitScore{ChangeID: "0", Trait: "t", Model: "m", Version: "v", Entity: "user", ID: "1", Score: &score, At: time.Unix(0, 0)}, nil))
		}
		for i := range samples {
			if _, err := h.Render(&samples[i]); err != nil {
				return nil, nil, fmt.Errorf("destination %s: %w (rendering a %s change)", d.Name, err, samples[i].Kind)
			}
		}
		rt.Sink = h
	case config.DestinationKafka:
		k := cfg.Kafka
		if len(d.Brokers) > 0 {
			k.Brokers = d.Brokers
		}
		cl, err := kafka.NewClient(k, append(kafka.ProducerOpts(), kgo.AllowAutoTopicCreation())...)
		if err != nil {
			return nil, nil, fmt.Errorf("destination %s: %w", d.Name, err)
		}
		rt.Sink, rt.Target, closer = &Kafka{Client: cl, Topic: d.Topic}, d.Topic, cl.Close
	default:
		return nil, nil, fmt.Errorf("destination %s: unknown type %q", d.Name, d.Type)
	}
	return rt, closer, nil
}

// Enabled reports whether the config has any destination.
func (s *Service) Enabled() bool { return len(s.runners) > 0 }

// Runner returns the runner of the destination named name, or nil.
func (s *Service) Runner(name string) *Runner { return s.byName[name] }

// Run runs every destination until ctx ends or one fails, then releases
// the sinks.
func (s *Service) Run(ctx context.Context) error {
	defer s.Close()
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range s.runners {
		g.Go(func() error {
			if err := r.Run(gctx); err != nil {
				return fmt.Errorf("destination %s: %w", r.Name(), err)
			}
			return nil
		})
	}
	return g.Wait()
}

// Close releases the sinks (Run does it when it returns).
func (s *Service) Close() {
	for _, c := range s.closers {
		c()
	}
	s.closers = nil
}
