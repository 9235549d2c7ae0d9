package config

import (
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole of pulse.yaml. Every service reads the same file and
// takes the sections it needs.
type Config struct {
	// DataDir holds local state: the embedded Kafka log, Pebble stores and,
	// in `pulse dev`, ClickHouse. Default "./pulse-data".
	DataDir string `yaml:"data_dir"`

	Kafka      Kafka      `yaml:"kafka"`
	Ingest     Ingest     `yaml:"ingest"`
	Stream     Stream     `yaml:"stream"`
	Scorer     Scorer     `yaml:"scorer"`
	Store      Store      `yaml:"store"`
	Redis      Redis      `yaml:"redis"`
	ClickHouse ClickHouse `yaml:"clickhouse"`
	Identity   Identity   `yaml:"identity"`

	Keys     []APIKey  `yaml:"keys"`
	Features []Feature `yaml:"features"`
	Segments []Segment `yaml:"segments"`
	Models   []Model   `yaml:"models"`

	// RFM, when set, computes live RFM groups (auto.go); Traits are
	// models the stream scores into features.
	RFM    *RFM    `yaml:"rfm"`
	Traits []Trait `yaml:"traits"`

	// Destinations receive segment changes (destinations.go).
	Destinations []Destination `yaml:"destinations"`

	// Dir is the directory the config file was read from; relative paths in
	// the file (models, data_dir) resolve against it. Empty for embedded configs.
	Dir string `yaml:"-"`
}

// Kafka says where the brokers are and what the topics are called.
type Kafka struct {
	// Brokers are the seed brokers, overriding the default 127.0.0.1:9092.
	Brokers []string `yaml:"brokers"`
	// ClientID names Pulse's clients in broker logs. Default "pulse".
	ClientID string `yaml:"client_id"`
	// Partitions is the partition count used when Pulse creates its topics. Default 4.
	Partitions int `yaml:"partitions"`
	// ReplicationFactor for created topics. Default 1; -1 uses the broker default.
	ReplicationFactor int    `yaml:"replication_factor"`
	Topics            Topics `yaml:"topics"`
	// CreateTopics makes services create missing topics at start. Default true.
	CreateTopics *bool `yaml:"create_topics"`
	// Retention is how long the topics that keep people's records until
	// they expire (the events, dead letters, segment changes, predictions,
	// trait scores, seeds, link requests and resolved records) keep them:
	// retention.ms, set when Pulse creates them and put right on existing
	// ones at each start (the deadline for what a deletion on request
	// cannot reach in Kafka's logs). At least 1d; 0, the default, leaves
	// the broker's default (a week) and existing topics as they are
	// (`pulse dev` sets a week: its embedded Kafka's default is never).
	Retention Duration `yaml:"retention"`
}

// Topics names every topic Pulse reads or writes.
type Topics struct {
	Events      string `yaml:"events"`      // default pulse.events
	Invalid     string `yaml:"invalid"`     // default pulse.events.invalid
	Segments    string `yaml:"segments"`    // default pulse.segments
	Predictions string `yaml:"predictions"` // default pulse.predictions
	State       string `yaml:"state"`       // default pulse.state (compacted changelog)
	// Seeds carries backfilled partial states to the stream, partition p
	// to the task of pulse.events partition p. Default pulse.seeds.
	Seeds string `yaml:"seeds"`
	// Activations is where each stream task publishes the input offset a
	// feature started counting at (compacted). Default pulse.activations.
	Activations string `yaml:"activations"`
	// Identity is the identity table: every identifier's latest link to
	// its person's canonical id (compacted, keyed by identifier; record
	// identity.Link). Default <events without .events>.identity:
	// pulse.identity.
	Identity string `yaml:"identity"`
	// IdentityRequests carries the stream's link requests to the linker
	// (one partition, so they fold in one order). Default
	// <events without .events>.identity.requests: pulse.identity.requests.
	IdentityRequests string `yaml:"identity_requests"`
	// Resolved is the stream's repartition topic: state moves of merged
	// entities, keyed by entity, partition p for the task of pulse.events
	// partition p. Default pulse.events.resolved.
	Resolved string `yaml:"resolved"`
	// RFM carries the RFM boundaries and the partitions' summaries
	// (compacted, partition 0). Default pulse.rfm.
	RFM string `yaml:"rfm"`
	// Traits carries the predictive traits' scores as they change
	// (model.TraitScore), for history's trait_scores. Default pulse.traits.
	Traits string `yaml:"traits"`
	// Suppressions holds the entity ids of people deleted with suppression
	// (compacted, keyed by id; a tombstone lifts one), whose events ingest
	// drops. Default <events without .events>.suppressions.
	Suppressions string `yaml:"suppressions"`
	// Deletions holds the progress of deletions on request (compacted,
	// deletion.Record keyed by request id and part): no person's ids, an
	// audit kept as long as the topic is. Default <events without
	// .events>.deletions.
	Deletions string `yaml:"deletions"`
}

// Named sets every topic to the default's name with base in place of
// "pulse" (base.events, base.events.invalid, base.identity.requests, ...):
// a run or a test with topics of its own on a shared cluster.
func (t *Topics) Named(base string) {
	*t = Topics{
		Events: base + ".events", Invalid: base + ".events.invalid", Segments: base + ".segments",
		Predictions: base + ".predictions", State: base + ".state", Seeds: base + ".seeds",
		Activations: base + ".activations", Identity: base + ".identity",
		IdentityRequests: base + ".identity.requests", Resolved: base + ".events.resolved",
		RFM: base + ".rfm", Traits: base + ".traits", Suppressions: base + ".suppressions",
		Deletions: base + ".deletions",
	}
}

// Ingest configures the HTTP tracking API.
type Ingest struct {
	// Listen is the address, overriding the default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// MaxEventBytes bounds one event's JSON. Default 32 KiB (Segment's limit).
	MaxEventBytes int `yaml:"max_event_bytes"`
	// MaxBodyBytes bounds one request body after decompression. Default 500 KiB.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxBatchEvents bounds the items in one batch. Default 2500.
	MaxBatchEvents int `yaml:"max_batch_events"`
	// ProduceTimeout is how long a request waits for Kafka before answering 503. Default 10s.
	ProduceTimeout Duration `yaml:"produce_timeout"`
}

// Stream configures the feature processors.
type Stream struct {
	// Group is the consumer group. Default pulse-stream.
	Group string `yaml:"group"`
	// AllowedLateness: events older than the entity's newest by more than
	// this are dead-lettered. Default 7d.
	AllowedLateness Duration `yaml:"allowed_lateness"`
	// Listen is the metrics/health address of `pulse stream`. Default 127.0.0.1:8082.
	Listen string `yaml:"listen"`
	// TimerInterval is how often expired windows are recomputed. Default 250ms.
	TimerInterval Duration `yaml:"timer_interval"`
	// StoreWrite is when a transaction's vectors reach the online store:
	// StoreWriteCommitted (default) once its Kafka transaction committed,
	// StoreWriteEarly before it commits (fresher; see docs/config.md).
	StoreWrite string `yaml:"store_write"`
	// CommitInterval is how long a task keeps a transaction open for the
	// fetches that follow its first, as Kafka Streams' commit.interval.ms:
	// each fetch is processed at once, and one Kafka transaction and one
	// local commit take them all. 0 commits each fetch. Default 0 with
	// StoreWriteCommitted, EarlyCommitInterval with StoreWriteEarly. See
	// docs/config.md.
	CommitInterval Duration `yaml:"commit_interval"`
	// CommitIntervalSet says the file set commit_interval (0 included), so
	// ApplyDefaults leaves it as it is.
	CommitIntervalSet bool `yaml:"-"`
}

// EarlyCommitInterval is stream.commit_interval's default with
// store_write: early. There the features reach the store at each fetch
// whatever the interval, so keeping a transaction open for 100 ms costs
// them nothing and takes a Kafka transaction per partition every 100 ms
// instead of one per fetch: fresher features at a steady rate and a
// fraction of the brokers' work (docs/BENCHMARKS.md, "Transactions kept
// open across fetches"). Kafka Streams commits this often under
// exactly-once. With store_write: committed the features wait for the
// commit, so there the default stays 0.
const EarlyCommitInterval = 100 * time.Millisecond

// The stream.store_write values.
const (
	// StoreWriteCommitted: the store shows only committed transactions.
	StoreWriteCommitted = "committed"
	// StoreWriteEarly: the vectors are written before the Kafka commit,
	// so no commit lies between an event and its features; a transaction
	// that then fails shows in the store until its replay rewrites the
	// same entities. Segment member lists change after the commit.
	StoreWriteEarly = "early"
)

// Scorer configures the serving API and dashboard.
type Scorer struct {
	// Listen is the address, overriding the default 127.0.0.1:8081.
	Listen string `yaml:"listen"`
}

// Store picks the online feature store.
type Store struct {
	// Backend is "pebble" (default) or "redis".
	Backend string `yaml:"backend"`
	// Path of the Pebble store. Default <data_dir>/store.
	Path string `yaml:"path"`
	// TTL drops vectors of entities inactive this long (Redis only). 0 = keep.
	TTL Duration `yaml:"ttl"`
	// RowCacheMB keeps vectors in memory in front of the store, up to
	// this many MiB: with Pebble the ones last written or read, with Redis
	// the ones last read, each dropped when Redis reports it changed (the
	// near cache). 0 = the default 64; negative = off.
	RowCacheMB int `yaml:"row_cache_mb"`
}

// Redis locates the Redis server for the online store.
type Redis struct {
	Addr      string `yaml:"addr"` // default 127.0.0.1:6379
	Password  string `yaml:"password"`
	DB        int    `yaml:"db"`
	KeyPrefix string `yaml:"key_prefix"` // default "pulse:"
}

// ClickHouse locates the history database.
type ClickHouse struct {
	// Addr is the native protocol address. Empty disables history, except in
	// `pulse dev`, which starts a local server when one is installed.
	Addr     string `yaml:"addr"`
	Database string `yaml:"database"` // default pulse
	User     string `yaml:"user"`     // default "default"
	Password string `yaml:"password"`
}

// Scopes an API key may hold.
const (
	ScopeWrite = "write" // send events
	ScopeRead  = "read"  // read features, segments, predictions
	ScopeAdmin = "admin" // reload models and config
)

// APIKey is one client credential.
type APIKey struct {
	Name   string   `yaml:"name"`
	Key    string   `yaml:"key"`
	Scopes []string `yaml:"scopes"`
	// RateLimit is requests per second allowed for this key; 0 = unlimited.
	RateLimit float64 `yaml:"rate_limit"`
	// Burst is how many requests may arrive at once. Default max(1, rate_limit).
	Burst int `yaml:"burst"`

	Line int `yaml:"-"`
}

// HasScope reports whether the key carries scope s.
func (k *APIKey) HasScope(s string) bool {
	for _, have := range k.Scopes {
		if have == s {
			return true
		}
	}
	return false
}

// Feature defines one per-entity feature. Either Agg (an aggregation over
// events) or Expr (derived from other features) is set.
type Feature struct {
	Name string `yaml:"name"`
	// Entity the feature belongs to. Default "user".
	Entity string `yaml:"entity"`
	// Agg is count, sum, avg, min, max, first, last, distinct or last_n.
	Agg string `yaml:"agg"`
	// Event filters track events by name; "" or "*" = any event.
	Event string `yaml:"event"`
	// Type filters by event type (track, identify, page, ...); "" = any.
	Type string `yaml:"type"`
	// Where is an optional expr-lang filter over the event.
	Where string `yaml:"where"`
	// Field is the dotted path of the value, e.g. properties.revenue.
	Field string `yaml:"field"`
	// Window is the sliding window; 0 = lifetime.
	Window Duration `yaml:"window"`
	// N is the list length for last_n. Default 10.
	N int `yaml:"n"`
	// Expr derives the feature from other features.
	Expr string `yaml:"expr"`
	// Description is shown in the dashboard and docs.
	Description string `yaml:"description"`

	Line int `yaml:"-"`
}

// Segment is a named rule over an entity's features.
type Segment struct {
	Name        string   `yaml:"name"`
	Description string   `yaml:"description"`
	Entity      string   `yaml:"entity"` // default user
	Rule        string   `yaml:"rule"`
	Webhook     *Webhook `yaml:"webhook"`
	// Auto marks a segment the config made itself (rfm:<group>), not
	// written in the file.
	Auto bool `yaml:"-"`

	Line int `yaml:"-"`
}

// Webhook receives a segment's enter and exit records.
type Webhook struct {
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"`
	// MaxRetries after the first attempt; default 8, 0 = no retry.
	MaxRetries *int     `yaml:"max_retries"`
	Timeout    Duration `yaml:"timeout"` // default 5s
}

// Retries is MaxRetries with its default applied.
func (w *Webhook) Retries() int {
	if w.MaxRetries == nil {
		return 8
	}
	return *w.MaxRetries
}

// Model is a scoring model served by the scorer.
type Model struct {
	Name string `yaml:"name"`
	Path string `yaml:"path"`
	// Format is xgboost, lightgbm or logistic; "" detects it from the file.
	Format   string   `yaml:"format"`
	Entity   string   `yaml:"entity"`   // default user
	Features []string `yaml:"features"` // model input order
	// Labels turn a binary score into a label (labels[1] when score >= threshold)
	// or name the classes of a multiclass model.
	Labels    []string `yaml:"labels"`
	Threshold float64  `yaml:"threshold"` // default 0.5
	// Default is answered, with model_used=false, when the model cannot be used.
	Default any `yaml:"default"`

	Line int `yaml:"-"`
}

// Duration is a time.Duration that also reads days ("7d", "1d12h").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration using days where whole.
func (d Duration) String() string {
	td := time.Duration(d)
	if td != 0 && td%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", td/(24*time.Hour))
	}
	return td.String()
}

// ParseDuration reads "250ms", "10m", "1h", "7d", "1d12h".
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		var n int64
		for _, c := range s[:i] {
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("invalid duration %q (want e.g. 10m, 1h, 7d)", s)
			}
			n = n*10 + int64(c-'0')
			if n > 1e6 {
				return 0, fmt.Errorf("duration %q too large", s)
			}
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return Duration(days), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 10m, 1h, 7d)", s)
	}
	return Duration(days + d), nil
}

// UnmarshalText implements encoding.TextUnmarshaler (used by yaml.v3 too).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// UnmarshalYAML reads a duration and, when it is invalid, reports the line
// without stopping the rest of the file from being checked.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		if err == nil {
			err = fmt.Errorf("a duration must be a string like 7d")
		}
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, err)}}
	}
	*d = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
