package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a config file.
type Problem struct {
	File string
	Line int    // 0 when unknown
	Path string // e.g. features[2].window or features[orders_7d].window
	Msg  string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteByte(':')
	}
	if p.Line > 0 {
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteString(": ")
	} else if p.File != "" {
		b.WriteByte(' ')
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Errors is every problem found in a config, in file order.
type Errors []Problem

func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, p := range e {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// AsErrors returns the problems inside err, if it holds a config Errors.
func AsErrors(err error) (Errors, bool) {
	var e Errors
	ok := errors.As(err, &e)
	return e, ok
}

// Load reads, defaults and validates the file at path. A failed validation
// returns Errors listing every problem with its line.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	c, err := Parse(data, path)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(filepath.Dir(path))
	if err == nil {
		c.Dir = abs
	}
	return c, nil
}

// Parse reads a config from YAML bytes; name is used in error messages.
func Parse(data []byte, name string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{yamlProblem(name, err)}
	}
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// Type errors leave the rest of the file decoded, so the checks below
	// still run and every problem is reported at once.
	var errs Errors
	lines := indexLines(&root)
	if err := dec.Decode(c); err != nil && err != io.EOF {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, Errors{yamlProblem(name, err)}
		}
		for _, msg := range te.Errors {
			errs = append(errs, lines.explain(yamlProblem(name, errors.New(msg))))
		}
	}
	for i := range c.Keys {
		c.Keys[i].Line = lines.item("keys", i)
	}
	for i := range c.Features {
		c.Features[i].Line = lines.item("features", i)
	}
	for i := range c.Segments {
		c.Segments[i].Line = lines.item("segments", i)
	}
	for i := range c.Models {
		c.Models[i].Line = lines.item("models", i)
	}
	for i := range c.Destinations {
		c.Destinations[i].Line = lines.item("destinations", i)
	}
	for i := range c.Traits {
		c.Traits[i].Line = lines.item("traits", i)
	}
	if c.RFM != nil {
		c.RFM.Line = lines.path("rfm")
	}
	c.Stream.CommitIntervalSet = lines.has("stream.commit_interval")
	c.ApplyDefaults()
	errs = append(errs, c.validate(name, lines)...)
	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
		return nil, errs
	}
	c.Segments = append(c.Segments, c.rfmSegments()...)
	return c, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: (?:unmarshal errors:\n\s*)?line (\d+): (.*)$`)

func yamlProblem(file string, err error) Problem {
	msg := strings.TrimSpace(err.Error())
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return Problem{File: file, Line: n, Msg: m[2]}
	}
	if strings.HasPrefix(msg, "line ") {
		rest := strings.TrimPrefix(msg, "line ")
		if i := strings.Index(rest, ": "); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				return Problem{File: file, Line: n, Msg: rest[i+2:]}
			}
		}
	}
	return Problem{File: file, Msg: strings.TrimPrefix(msg, "yaml: ")}
}

// nodeLines finds the line of each list item and each key in the file.
type nodeLines struct {
	doc *yaml.Node            // the file's top mapping (nil when it is none)
	top map[string]*yaml.Node // top-level key -> value node
}

func indexLines(root *yaml.Node) nodeLines {
	nl := nodeLines{top: map[string]*yaml.Node{}}
	doc := root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		doc = doc.Content[0]
	}
	if doc.Kind == yaml.MappingNode {
		nl.doc = doc
		for i := 0; i+1 < len(doc.Content); i += 2 {
			nl.top[doc.Content[i].Value] = doc.Content[i+1]
		}
	}
	return nl
}

func (nl nodeLines) item(section string, i int) int {
	n := nl.top[section]
	if n == nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
		return 0
	}
	return n.Content[i].Line
}

// field returns the line of key within list item i of section (or of the
// item when the key is absent).
func (nl nodeLines) field(section string, i int, key string) int {
	n := nl.top[section]
	if n == nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
		return 0
	}
	item := n.Content[i]
	for j := 0; j+1 < len(item.Content); j += 2 {
		if item.Content[j].Value == key {
			return item.Content[j].Line
		}
	}
	return item.Line
}

// keys lists the keys of list item i of section, in file order.
func (nl nodeLines) keys(section string, i int) []string {
	n := nl.top[section]
	if n == nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
		return nil
	}
	var out []string
	item := n.Content[i]
	for j := 0; j+1 < len(item.Content); j += 2 {
		out = append(out, item.Content[j].Value)
	}
	return out
}

// has says whether the file sets a dotted top-level path like
// "stream.commit_interval" (to any value, a zero included).
func (nl nodeLines) has(p string) bool {
	n, _ := nl.find(p)
	return n != nil && n.Tag != "!!null"
}

// path returns the line of a dotted top-level path like "ingest.listen".
func (nl nodeLines) path(p string) int {
	_, line := nl.find(p)
	return line
}

// find returns the value node of a dotted top-level path (nil when the
// file does not set it) and the line of its deepest key the file has.
func (nl nodeLines) find(p string) (*yaml.Node, int) {
	parts := strings.Split(p, ".")
	n := nl.top[parts[0]]
	line := 0
	if n != nil {
		line = n.Line
	}
	for _, part := range parts[1:] {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil, line
		}
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == part {
				line = n.Content[j].Line
				next = n.Content[j+1]
			}
		}
		n = next
	}
	return n, line
}

// ApplyDefaults fills every unset value with its documented default.
func (c *Config) ApplyDefaults() {
	if c.DataDir == "" {
		c.DataDir = "./pulse-data"
	}
	k := &c.Kafka
	if len(k.Brokers) == 0 {
		k.Brokers = []string{"127.0.0.1:9092"}
	}
	if k.ClientID == "" {
		k.ClientID = "pulse"
	}
	if k.Partitions == 0 {
		k.Partitions = 4
	}
	if k.ReplicationFactor == 0 {
		k.ReplicationFactor = 1
	}
	if k.CreateTopics == nil {
		t := true
		k.CreateTopics = &t
	}
	setDefault(&k.Topics.Events, "pulse.events")
	setDefault(&k.Topics.Invalid, "pulse.events.invalid")
	setDefault(&k.Topics.Segments, "pulse.segments")
	setDefault(&k.Topics.Predictions, "pulse.predictions")
	setDefault(&k.Topics.State, "pulse.state")
	setDefault(&k.Topics.Seeds, "pulse.seeds")
	setDefault(&k.Topics.Activations, "pulse.activations")
	// Named after the events topic, so two Pulses on one cluster with
	// their own events topics never share a linker: pulse.events gives
	// pulse.identity, pulse.identity.requests, pulse.events.resolved.
	base := strings.TrimSuffix(k.Topics.Events, ".events")
	setDefault(&k.Topics.Identity, base+".identity")
	setDefault(&k.Topics.IdentityRequests, base+".identity.requests")
	setDefault(&k.Topics.Resolved, k.Topics.Events+".resolved")
	setDefault(&k.Topics.Suppressions, base+".suppressions")
	setDefault(&k.Topics.Deletions, base+".deletions")
	setDefault(&k.Topics.RFM, "pulse.rfm")
	setDefault(&k.Topics.Traits, "pulse.traits")

	in := &c.Ingest
	setDefault(&in.Listen, "127.0.0.1:8080")
	if in.MaxEventBytes == 0 {
		in.MaxEventBytes = 32 << 10
	}
	if in.MaxBodyBytes == 0 {
		in.MaxBodyBytes = 500 << 10
	}
	if in.MaxBatchEvents == 0 {
		in.MaxBatchEvents = 2500
	}
	if in.ProduceTimeout == 0 {
		in.ProduceTimeout = Duration(10 * time.Second)
	}

	st := &c.Stream
	setDefault(&st.Group, "pulse-stream")
	setDefault(&st.Listen, "127.0.0.1:8082")
	if st.AllowedLateness == 0 {
		st.AllowedLateness = Duration(7 * 24 * time.Hour)
	}
	if st.TimerInterval == 0 {
		st.TimerInterval = Duration(250 * time.Millisecond)
	}
	setDefault(&st.StoreWrite, StoreWriteCommitted)
	if st.StoreWrite == StoreWriteEarly && !st.CommitIntervalSet && st.CommitInterval == 0 {
		st.CommitInterval = Duration(EarlyCommitInterval)
	}

	setDefault(&c.Scorer.Listen, "127.0.0.1:8081")
	setDefault(&c.Store.Backend, "pebble")
	if c.Store.Path == "" {
		c.Store.Path = filepath.Join(c.DataDir, "store")
	}
	setDefault(&c.Redis.Addr, "127.0.0.1:6379")
	setDefault(&c.Redis.KeyPrefix, "pulse:")
	setDefault(&c.ClickHouse.Database, "pulse")
	setDefault(&c.ClickHouse.User, "default")
	c.Identity.applyDefaults()

	for i := range c.Keys {
		if c.Keys[i].Burst == 0 && c.Keys[i].RateLimit > 0 {
			c.Keys[i].Burst = max(1, int(c.Keys[i].RateLimit))
		}
	}
	for i := range c.Features {
		f := &c.Features[i]
		setDefault(&f.Entity, "user")
		if f.Agg == "last_n" && f.N == 0 {
			f.N = 10
		}
		if f.Agg == "last_by_key" && f.N == 0 {
			f.N = 100
		}
	}
	for i := range c.Segments {
		setDefault(&c.Segments[i].Entity, "user")
		if w := c.Segments[i].Webhook; w != nil {
			if w.Timeout == 0 {
				w.Timeout = Duration(5 * time.Second)
			}
		}
	}
	for i := range c.Destinations {
		c.Destinations[i].applyDefaults()
	}
	for i := range c.Models {
		m := &c.Models[i]
		setDefault(&m.Entity, "user")
		if m.Threshold == 0 {
			m.Threshold = 0.5
		}
	}
	c.applyAutoDefaults()
}

func setDefault(s *string, v string) {
	if *s == "" {
		*s = v
	}
}

// Aggregations lists the valid values of Feature.Agg.
var Aggregations = []string{"count", "sum", "avg", "min", "max", "first", "last", "distinct", "last_n", "last_by_key"}

// EventTypes lists the Segment event types.
var EventTypes = []string{"track", "identify", "page", "screen", "group", "alias"}

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// check is one validation rule; validate runs the whole table and keeps
// every failure.
type check struct {
	path string // for the error line: a top-level dotted path
	bad  func(c *Config) string
}

var checks = []check{
	{"kafka.brokers", func(c *Config) string {
		for _, b := range c.Kafka.Brokers {
			if !strings.Contains(b, ":") {
				return fmt.Sprintf("broker %q must be host:port", b)
			}
		}
		return ""
	}},
	{"kafka.partitions", func(c *Config) string {
		if c.Kafka.Partitions < 1 || c.Kafka.Partitions > 10000 {
			return fmt.Sprintf("must be between 1 and 10000, got %d", c.Kafka.Partitions)
		}
		return ""
	}},
	{"kafka.retention", func(c *Config) string {
		if r := c.Kafka.Retention.D(); r != 0 && r < 24*time.Hour {
			return fmt.Sprintf("must be at least 1d (or 0: the broker's default), got %s: a service down longer would lose what it has not read", c.Kafka.Retention)
		}
		return ""
	}},
	{"ingest.listen", func(c *Config) string { return badAddr(c.Ingest.Listen) }},
	{"scorer.listen", func(c *Config) string { return badAddr(c.Scorer.Listen) }},
	{"stream.listen", func(c *Config) string { return badAddr(c.Stream.Listen) }},
	{"ingest.max_event_bytes", func(c *Config) string { return outside(c.Ingest.MaxEventBytes, 256, 16<<20) }},
	{"ingest.max_body_bytes", func(c *Config) string { return outside(c.Ingest.MaxBodyBytes, 1<<10, 256<<20) }},
	{"ingest.max_batch_events", func(c *Config) string { return outside(c.Ingest.MaxBatchEvents, 1, 1_000_000) }},
	{"ingest.produce_timeout", func(c *Config) string {
		if c.Ingest.ProduceTimeout.D() < 100*time.Millisecond {
			return "must be at least 100ms"
		}
		return ""
	}},
	{"stream.allowed_lateness", func(c *Config) string {
		if c.Stream.AllowedLateness < 0 {
			return "must not be negative"
		}
		return ""
	}},
	{"stream.timer_interval", func(c *Config) string {
		if d := c.Stream.TimerInterval.D(); d < 10*time.Millisecond || d > time.Minute {
			return "must be between 10ms and 1m"
		}
		return ""
	}},
	{"stream.store_write", func(c *Config) string {
		if w := c.Stream.StoreWrite; w != StoreWriteCommitted && w != StoreWriteEarly {
			return fmt.Sprintf("unknown value %q (want %s or %s)", w, StoreWriteCommitted, StoreWriteEarly)
		}
		return ""
	}},
	{"stream.commit_interval", func(c *Config) string {
		if d := c.Stream.CommitInterval.D(); d < 0 || d > 5*time.Second {
			return "must be between 0 and 5s"
		}
		return ""
	}},
	{"store.backend", func(c *Config) string {
		if c.Store.Backend != "pebble" && c.Store.Backend != "redis" {
			return fmt.Sprintf("unknown backend %q (want pebble or redis)", c.Store.Backend)
		}
		return ""
	}},
	{"store.ttl", func(c *Config) string {
		if c.Store.TTL < 0 {
			return "must not be negative"
		}
		return ""
	}},
}

func badAddr(a string) string {
	i := strings.LastIndexByte(a, ':')
	if i < 0 {
		return fmt.Sprintf("address %q must be host:port", a)
	}
	if p, err := strconv.Atoi(a[i+1:]); err != nil || p < 0 || p > 65535 {
		return fmt.Sprintf("address %q has an invalid port", a)
	}
	return ""
}

func outside(v, lo, hi int) string {
	if v < lo || v > hi {
		return fmt.Sprintf("must be between %d and %d, got %d", lo, hi, v)
	}
	return ""
}

func (c *Config) validate(file string, nl nodeLines) Errors {
	var errs Errors
	add := func(line int, path, format string, args ...any) {
		errs = append(errs, Problem{File: file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	for _, ck := range slices.Concat(checks, identityChecks) {
		if msg := ck.bad(c); msg != "" {
			add(nl.path(ck.path), ck.path, "%s", msg)
		}
	}

	keys := map[string]bool{}
	for i, k := range c.Keys {
		p := fmt.Sprintf("keys[%d]", i)
		if k.Name != "" {
			p = fmt.Sprintf("keys[%s]", k.Name)
		}
		if k.Key == "" {
			add(nl.field("keys", i, "key"), p+".key", "required")
		} else if keys[k.Key] {
			add(nl.field("keys", i, "key"), p+".key", "duplicate key")
		}
		keys[k.Key] = true
		if len(k.Scopes) == 0 {
			add(nl.field("keys", i, "scopes"), p+".scopes", "required (write, read and/or admin)")
		}
		for _, s := range k.Scopes {
			if s != ScopeWrite && s != ScopeRead && s != ScopeAdmin {
				add(nl.field("keys", i, "scopes"), p+".scopes", "unknown scope %q (want write, read or admin)", s)
			}
		}
		if k.RateLimit < 0 {
			add(nl.field("keys", i, "rate_limit"), p+".rate_limit", "must not be negative")
		}
	}

	features := map[string]bool{}
	for i, f := range c.Features {
		p := fmt.Sprintf("features[%d]", i)
		if f.Name != "" {
			p = fmt.Sprintf("features[%s]", f.Name)
		}
		line := func(key string) int { return nl.field("features", i, key) }
		switch {
		case f.Name == "":
			add(line("name"), p+".name", "required")
		case !nameRE.MatchString(f.Name):
			add(line("name"), p+".name", "must be an identifier (letters, digits, _), got %q", f.Name)
		case features[f.Name]:
			add(line("name"), p+".name", "duplicate feature name")
		}
		features[f.Name] = true
		if f.Expr != "" {
			if f.Agg != "" || f.Field != "" || f.Event != "" || f.Where != "" || f.Window != 0 {
				add(line("expr"), p, "a derived feature (expr) takes no agg, field, event, where or window")
			}
			continue
		}
		if f.Agg == "" {
			add(line("agg"), p+".agg", "required (one of %s), or set expr", strings.Join(Aggregations, ", "))
			continue
		}
		if !contains(Aggregations, f.Agg) {
			add(line("agg"), p+".agg", "unknown aggregation %q (want one of %s)", f.Agg, strings.Join(Aggregations, ", "))
		}
		if f.Agg != "count" && f.Field == "" {
			add(line("field"), p+".field", "required for agg %s", f.Agg)
		}
		if f.Type != "" && !contains(EventTypes, f.Type) {
			add(line("type"), p+".type", "unknown event type %q (want one of %s)", f.Type, strings.Join(EventTypes, ", "))
		}
		if f.Window < 0 {
			add(line("window"), p+".window", "must not be negative")
		} else if f.Window != 0 && f.Window.D() < time.Second {
			add(line("window"), p+".window", "must be at least 1s")
		} else if f.Window.D() > 5*365*24*time.Hour {
			add(line("window"), p+".window", "must be at most 5 years; omit it for lifetime")
		}
		if (f.Agg == "last_n" || f.Agg == "last_by_key") && (f.N < 1 || f.N > 1000) {
			add(line("n"), p+".n", "must be between 1 and 1000")
		}
	}

	segments := map[string]bool{}
	for i, s := range c.Segments {
		p := fmt.Sprintf("segments[%d]", i)
		if s.Name != "" {
			p = fmt.Sprintf("segments[%s]", s.Name)
		}
		switch {
		case s.Name == "":
			add(nl.field("segments", i, "name"), p+".name", "required")
		case !nameRE.MatchString(s.Name):
			add(nl.field("segments", i, "name"), p+".name", "must be an identifier (letters, digits, _), got %q", s.Name)
		case segments[s.Name]:
			add(nl.field("segments", i, "name"), p+".name", "duplicate segment name")
		}
		segments[s.Name] = true
		if strings.TrimSpace(s.Rule) == "" {
			add(nl.field("segments", i, "rule"), p+".rule", "required")
		}
		if w := s.Webhook; w != nil {
			if !strings.HasPrefix(w.URL, "http://") && !strings.HasPrefix(w.URL, "https://") {
				add(nl.field("segments", i, "webhook"), p+".webhook.url", "must be an http(s) URL")
			}
			if r := w.Retries(); r < 0 || r > 100 {
				add(nl.field("segments", i, "webhook"), p+".webhook.max_retries", "must be between 0 and 100")
			}
			if w.Secret == "" {
				add(nl.field("segments", i, "webhook"), p+".webhook.secret", "required: every delivery is signed with it")
			}
		}
	}

	models := map[string]bool{}
	for i, m := range c.Models {
		p := fmt.Sprintf("models[%d]", i)
		if m.Name != "" {
			p = fmt.Sprintf("models[%s]", m.Name)
		}
		switch {
		case m.Name == "":
			add(nl.field("models", i, "name"), p+".name", "required")
		case models[m.Name]:
			add(nl.field("models", i, "name"), p+".name", "duplicate model name")
		}
		models[m.Name] = true
		if m.Path == "" {
			add(nl.field("models", i, "path"), p+".path", "required")
		}
		if m.Format != "" && m.Format != "xgboost" && m.Format != "lightgbm" && m.Format != "logistic" {
			add(nl.field("models", i, "format"), p+".format", "unknown format %q (want xgboost, lightgbm or logistic)", m.Format)
		}
		if len(m.Features) == 0 {
			add(nl.field("models", i, "features"), p+".features", "required: the model's input features in order")
		}
		if m.Threshold <= 0 || m.Threshold >= 1 {
			add(nl.field("models", i, "threshold"), p+".threshold", "must be between 0 and 1")
		}
	}
	c.validateAuto(add, nl)
	errs = append(errs, c.validateDestinations(file, nl)...)
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
	return errs
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Key returns the API key with the given secret, or nil.
func (c *Config) Key(secret string) *APIKey {
	for i := range c.Keys {
		if c.Keys[i].Key == secret {
			return &c.Keys[i]
		}
	}
	return nil
}

// Resolve makes a path from the config file absolute against the file's directory.
func (c *Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) || c.Dir == "" {
		return p
	}
	return filepath.Join(c.Dir, p)
}
