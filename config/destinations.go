package config

import (
	"fmt"
	"math"
	"path"
	"regexp"
	"slices"
	"strings"
	"text/template"
	"time"

	json "github.com/goccy/go-json"
)

// Destination types.
const (
	DestinationWebhook = "webhook" // signed POST of the segment record
	DestinationSegment = "segment" // Segment spec: Audience Entered/Exited through /v1/batch
	DestinationHTTP    = "http"    // any JSON API through a template
	DestinationKafka   = "kafka"   // another topic or cluster, JSON
)

// DestinationTypes lists the valid values of Destination.Type.
var DestinationTypes = []string{DestinationWebhook, DestinationSegment, DestinationHTTP, DestinationKafka}

// Destination receives the enters and exits of the segments it names,
// and the score changes of the predictive traits it names, delivered by
// the destination runner (`pulse destinations`, and `pulse dev`).
// docs/destinations.md describes each type.
type Destination struct {
	// Name names the destination in metrics, dead letters, the admin API
	// and its consumer group (pulse-destination-<name>). Required.
	Name string `yaml:"name"`
	// Type is webhook, segment, http or kafka. Required.
	Type string `yaml:"type"`
	// Segments are the segments it carries: names, or globs ("rfm:*",
	// path.Match syntax). Segments or Traits (or both) is required.
	Segments []string `yaml:"segments"`
	// Traits are the predictive traits (config traits:) whose score
	// changes it carries, from the traits topic: names, or globs ("*").
	Traits []string `yaml:"traits"`
	// Decimals: a trait's score change is delivered only when the score
	// rounded to this many decimals changes, overriding the default 2
	// (TraitDecimals); the score is delivered rounded so by the segment
	// and http types.
	Decimals *int `yaml:"decimals"`
	// Thresholds, when set, deliver a trait's score change only when the
	// (rounded) score crosses one of them: the previous and the new score
	// on different sides (a score >= t is above t; no score is below
	// every threshold).
	Thresholds []float64 `yaml:"thresholds"`
	// TraitTrack also sends, for segment, a track "Trait Changed" per
	// trait change, besides the identify.
	TraitTrack bool `yaml:"trait_track"`

	// URL: webhook and http, the endpoint; segment, the Segment-API base
	// URL, overriding the default https://api.segment.io (/v1/batch is
	// appended).
	URL string `yaml:"url"`
	// Secret signs each webhook delivery (HMAC-SHA256). Required for webhook.
	Secret string `yaml:"secret"`
	// WriteKey authenticates to the Segment API. Required for segment.
	WriteKey string `yaml:"write_key"`
	// Identify also sends, for segment, an identify call setting the trait
	// <segment>: true|false.
	Identify bool `yaml:"identify"`
	// Method of an http request, overriding the default POST.
	Method string `yaml:"method"`
	// Headers are added to each http (and webhook) request.
	Headers map[string]string `yaml:"headers"`
	// Auth of http requests: a bearer token or a user name and password.
	Auth *DestinationAuth `yaml:"auth"`
	// Template is the body of an http request (Go text/template over one
	// change). Required for http.
	Template string `yaml:"template"`
	// Topic is where kafka writes. Required for kafka.
	Topic string `yaml:"topic"`
	// Brokers of the kafka destination's cluster, overriding the default:
	// Pulse's own kafka.brokers.
	Brokers []string `yaml:"brokers"`

	// MaxRetries after the first attempt, overriding the default 8; 0 = no retry.
	MaxRetries *int `yaml:"max_retries"`
	// Timeout of one attempt, overriding the default 10s.
	Timeout Duration `yaml:"timeout"`
	// BatchSize is the most changes sent in one request: segment, default
	// 100; kafka, default 500; webhook and http send one per request.
	BatchSize int `yaml:"batch_size"`
	// Concurrency is how many requests may be in flight at once, for
	// different entities (one entity's changes go one at a time, in
	// order), overriding the default 1.
	Concurrency int       `yaml:"concurrency"`
	RateLimit   RateLimit `yaml:"rate_limit"`
	// StartFrom is where a new destination (one whose consumer group has
	// no offsets yet) starts reading: "end" (the default: only changes
	// from now on) or "beginning" (every change the segments topic still
	// holds). Once it has offsets, it goes on from them.
	StartFrom string `yaml:"start_from"`

	Line int `yaml:"-"`
}

// DestinationAuth is an http destination's credentials.
type DestinationAuth struct {
	Bearer   string `yaml:"bearer"`   // Authorization: Bearer <bearer>
	Username string `yaml:"username"` // HTTP Basic, with Password
	Password string `yaml:"password"`
}

// RateLimit bounds a destination's pace; 0 is no bound.
type RateLimit struct {
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	RecordsPerSecond  float64 `yaml:"records_per_second"`
}

// Retries is MaxRetries with its default applied.
func (d *Destination) Retries() int {
	if d.MaxRetries == nil {
		return 8
	}
	return *d.MaxRetries
}

// Matches reports whether the destination carries segment name.
func (d *Destination) Matches(name string) bool { return matchAny(d.Segments, name) }

// MatchesTrait reports whether the destination carries trait name.
func (d *Destination) MatchesTrait(name string) bool { return matchAny(d.Traits, name) }

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// TraitDecimals is Decimals with its default (2) applied.
func (d *Destination) TraitDecimals() int {
	if d.Decimals == nil {
		return 2
	}
	return *d.Decimals
}

func (d *Destination) applyDefaults() {
	if d.Timeout == 0 {
		d.Timeout = Duration(10 * time.Second)
	}
	if d.Concurrency == 0 {
		d.Concurrency = 1
	}
	setDefault(&d.StartFrom, "end")
	switch d.Type {
	case DestinationSegment:
		setDefault(&d.URL, "https://api.segment.io")
		if d.BatchSize == 0 {
			d.BatchSize = 100
		}
	case DestinationKafka:
		if d.BatchSize == 0 {
			d.BatchSize = 500
		}
	case DestinationHTTP:
		setDefault(&d.Method, "POST")
		d.Method = strings.ToUpper(d.Method)
		if d.BatchSize == 0 {
			d.BatchSize = 1
		}
	case DestinationWebhook:
		if d.BatchSize == 0 {
			d.BatchSize = 1
		}
	}
}

// TemplateFuncs are the functions an http destination's template may
// call: json writes its argument as JSON (a string quoted and escaped, a
// missing feature as null).
var TemplateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
}

// ParseTemplate parses the http destination's template with TemplateFuncs.
func (d *Destination) ParseTemplate() (*template.Template, error) {
	return template.New(d.Name).Funcs(TemplateFuncs).Option("missingkey=zero").Parse(d.Template)
}

// ParseURL parses the http destination's URL as a template (it may
// depend on the change: {{if .Entered}}...{{else}}...{{end}}), or returns
// nil when it has no action.
func (d *Destination) ParseURL() (*template.Template, error) {
	if !strings.Contains(d.URL, "{{") {
		return nil, nil
	}
	return template.New(d.Name + ".url").Funcs(TemplateFuncs).Option("missingkey=zero").Parse(d.URL)
}

var destinationNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// destinationKeys are the keys each type reads, beyond the common ones: a
// key another type reads is reported, not silently ignored.
var destinationKeys = map[string][]string{
	DestinationWebhook: {"url", "secret", "headers"},
	DestinationSegment: {"url", "write_key", "identify", "trait_track"},
	DestinationHTTP:    {"url", "method", "headers", "auth", "template"},
	DestinationKafka:   {"topic", "brokers"},
}

var commonDestinationKeys = []string{"name", "type", "segments", "traits", "decimals", "thresholds", "max_retries", "timeout", "batch_size", "concurrency", "rate_limit", "start_from"}

func (c *Config) validateDestinations(file string, nl nodeLines) Errors {
	var errs Errors
	names := map[string]bool{}
	segments := map[string]bool{}
	for _, s := range c.Segments {
		segments[s.Name] = true
	}
	traits := map[string]bool{}
	for _, t := range c.Traits {
		traits[t.Name] = true
	}
	for i := range c.Destinations {
		d := &c.Destinations[i]
		p := fmt.Sprintf("destinations[%d]", i)
		if d.Name != "" {
			p = fmt.Sprintf("destinations[%s]", d.Name)
		}
		add := func(key, format string, args ...any) {
			path := p
			if key != "" {
				path += "." + key
			}
			errs = append(errs, Problem{File: file, Line: nl.field("destinations", i, key), Path: path, Msg: fmt.Sprintf(format, args...)})
		}
		switch {
		case d.Name == "":
			add("name", "required")
		case !destinationNameRE.MatchString(d.Name):
			add("name", "must be letters, digits, _, . and - (it names a consumer group), got %q", d.Name)
		case names[d.Name]:
			add("name", "duplicate destination name")
		}
		names[d.Name] = true
		allowed, known := destinationKeys[d.Type]
		if !known {
			if d.Type == "" {
				add("type", "required (one of %s)", strings.Join(DestinationTypes, ", "))
			} else {
				add("type", "unknown type %q (want one of %s)", d.Type, strings.Join(DestinationTypes, ", "))
			}
		} else {
			for _, k := range nl.keys("destinations", i) {
				if !slices.Contains(allowed, k) && !slices.Contains(commonDestinationKeys, k) {
					add(k, "not used by a %s destination", d.Type)
				}
			}
		}
		if len(d.Segments) == 0 && len(d.Traits) == 0 {
			add("segments", "required (or traits:): the segment names or globs (e.g. \"rfm:*\") it carries")
		}
		for _, s := range d.Segments {
			if _, err := path.Match(s, ""); err != nil {
				add("segments", "invalid glob %q", s)
			} else if !strings.ContainsAny(s, `*?[\`) && !segments[s] {
				add("segments", "no segment named %q", s)
			}
		}
		for _, s := range d.Traits {
			if _, err := path.Match(s, ""); err != nil {
				add("traits", "invalid glob %q", s)
			} else if !strings.ContainsAny(s, `*?[\`) && !traits[s] {
				add("traits", "no trait named %q (the traits: section names the predictive traits)", s)
			}
		}
		if len(d.Traits) == 0 {
			for _, k := range []string{"decimals", "thresholds", "trait_track"} {
				if slices.Contains(nl.keys("destinations", i), k) {
					add(k, "only used with traits:")
				}
			}
		}
		if n := d.TraitDecimals(); n < 0 || n > 15 {
			add("decimals", "must be between 0 and 15, got %d", n)
		}
		for j, th := range d.Thresholds {
			switch {
			case math.IsNaN(th) || math.IsInf(th, 0):
				add("thresholds", "threshold %v is not a finite number", th)
			case j > 0 && th <= d.Thresholds[j-1]:
				add("thresholds", "must be in increasing order without repeats, got %v after %v", th, d.Thresholds[j-1])
			}
		}
		httpURL := func() {
			if !strings.HasPrefix(d.URL, "http://") && !strings.HasPrefix(d.URL, "https://") {
				add("url", "required: an http(s) URL")
			}
		}
		switch d.Type {
		case DestinationWebhook:
			httpURL()
			if d.Secret == "" {
				add("secret", "required: every delivery is signed with it")
			}
		case DestinationSegment:
			httpURL()
			if d.WriteKey == "" {
				add("write_key", "required")
			}
		case DestinationHTTP:
			httpURL()
			if _, err := d.ParseURL(); err != nil {
				add("url", "%v", err)
			}
			if strings.TrimSpace(d.Template) == "" {
				add("template", "required: the request body")
			} else if _, err := d.ParseTemplate(); err != nil {
				add("template", "%v", err)
			}
			if !slices.Contains([]string{"POST", "PUT", "PATCH", "DELETE", "GET"}, d.Method) {
				add("method", "unknown method %q (want POST, PUT, PATCH, DELETE or GET)", d.Method)
			}
			if a := d.Auth; a != nil && a.Bearer != "" && (a.Username != "" || a.Password != "") {
				add("auth", "a bearer token or a username and password, not both")
			}
		case DestinationKafka:
			if d.Topic == "" {
				add("topic", "required")
			}
			for _, b := range d.Brokers {
				if !strings.Contains(b, ":") {
					add("brokers", "broker %q must be host:port", b)
				}
			}
		}
		if r := d.Retries(); r < 0 || r > 100 {
			add("max_retries", "must be between 0 and 100")
		}
		if t := d.Timeout.D(); t < 10*time.Millisecond || t > 5*time.Minute {
			add("timeout", "must be between 10ms and 5m")
		}
		switch {
		case !known:
		case (d.Type == DestinationWebhook || d.Type == DestinationHTTP) && d.BatchSize != 1:
			add("batch_size", "%s destinations send one change per request", d.Type)
		case d.BatchSize < 1 || d.BatchSize > 10_000:
			add("batch_size", "must be between 1 and 10000")
		}
		if d.Concurrency < 1 || d.Concurrency > 64 {
			add("concurrency", "must be between 1 and 64")
		}
		if d.StartFrom != "end" && d.StartFrom != "beginning" {
			add("start_from", "must be end or beginning, got %q", d.StartFrom)
		}
		if d.RateLimit.RequestsPerSecond < 0 || d.RateLimit.RecordsPerSecond < 0 {
			add("rate_limit", "must not be negative")
		}
	}
	return errs
}
