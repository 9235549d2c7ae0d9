package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigLoads(t *testing.T) {
	c, err := Load("../examples/ecommerce/pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Features) < 20 || len(c.Segments) < 4 || len(c.Models) != 2 || c.RFM == nil || len(c.Traits) != 1 {
		t.Fatalf("example: %d features, %d segments, %d models", len(c.Features), len(c.Segments), len(c.Models))
	}
	if c.Kafka.Topics.Events != "pulse.events" || c.Ingest.Listen != "127.0.0.1:8080" || c.Scorer.Listen != "127.0.0.1:8081" {
		t.Fatalf("defaults not applied: %+v %+v", c.Kafka.Topics, c.Ingest)
	}
	if c.Ingest.MaxEventBytes != 32<<10 || c.Ingest.MaxBodyBytes != 500<<10 || c.Ingest.MaxBatchEvents != 2500 {
		t.Fatalf("limits: %+v", c.Ingest)
	}
	if c.Stream.AllowedLateness.D() != 7*24*time.Hour {
		t.Fatalf("allowed lateness %v", c.Stream.AllowedLateness)
	}
	// The read key is the dashboard's in pulse dev: read alone; admin is its own key.
	if c.Key("dev-write-key") == nil || c.Key("dev-read-key").HasScope(ScopeAdmin) || !c.Key("dev-admin-key").HasScope(ScopeAdmin) {
		t.Fatal("dev keys")
	}
	if c.Features[0].Line == 0 || c.Segments[0].Line == 0 {
		t.Fatal("lines not recorded")
	}
}

func TestEveryProblemAtOnce(t *testing.T) {
	src := `
kafka:
  partitions: -1
ingest:
  listen: nowhere
keys:
  - name: a
    scopes: [write, root]
features:
  - name: orders_7d
    agg: count
    window: 7x
  - name: revenue
    agg: sum
  - name: revenue
    agg: median
    field: properties.x
  - name: bad name
    expr: '1'
segments:
  - name: s
models:
  - name: m
    format: onnx
unknown_section: 1
`
	_, err := Parse([]byte(src), "p.yaml")
	errs, ok := AsErrors(err)
	if !ok {
		t.Fatalf("error %v is not Errors", err)
	}
	want := []string{
		"p.yaml:3: kafka.partitions: must be between 1 and 10000, got -1",
		`p.yaml:5: ingest.listen: address "nowhere" must be host:port`,
		"p.yaml:7: keys[a].key: required",
		`p.yaml:8: keys[a].scopes: unknown scope "root" (want write, read or admin)`,
		`p.yaml:12: features[orders_7d].window: invalid duration "7x" (want e.g. 10m, 1h, 7d)`,
		"p.yaml:13: features[revenue].field: required for agg sum",
		"p.yaml:15: features[revenue].name: duplicate feature name",
		`p.yaml:16: features[revenue].agg: unknown aggregation "median" (want one of count, sum, avg, min, max, first, last, distinct, last_n, last_by_key)`,
		`p.yaml:18: features[bad name].name: must be an identifier (letters, digits, _), got "bad name"`,
		"p.yaml:21: segments[s].rule: required",
		"p.yaml:23: models[m].path: required",
		`p.yaml:24: models[m].format: unknown format "onnx" (want xgboost, lightgbm or logistic)`,
		"p.yaml:23: models[m].features: required: the model's input features in order",
		"p.yaml:25: unknown_section: unknown setting",
	}
	got := map[string]bool{}
	for _, p := range errs {
		got[p.String()] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("missing problem %q", w)
		}
	}
	if t.Failed() {
		t.Logf("got:\n%s", errs.Error())
	}
	for i := 1; i < len(errs); i++ {
		if errs[i].Line < errs[i-1].Line {
			t.Fatalf("problems not in file order:\n%s", errs.Error())
		}
	}
}

func TestDurations(t *testing.T) {
	f := func(in string, want time.Duration) {
		t.Helper()
		d, err := ParseDuration(in)
		if err != nil {
			t.Fatalf("ParseDuration(%q): %v", in, err)
		}
		if d.D() != want {
			t.Fatalf("ParseDuration(%q) = %v, want %v", in, d.D(), want)
		}
	}
	f("250ms", 250*time.Millisecond)
	f("10m", 10*time.Minute)
	f("7d", 7*24*time.Hour)
	f("1d12h", 36*time.Hour)
	for _, bad := range []string{"", "7x", "d", "-", "1.5d", "99999999d"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q): no error", bad)
		}
	}
	if s := Duration(7 * 24 * time.Hour).String(); s != "7d" {
		t.Fatalf("String = %s", s)
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	p := dir + "/pulse.yaml"
	if err := os.WriteFile(p, []byte("data_dir: ./d\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Resolve("models/m.json"); !strings.HasPrefix(got, dir) {
		t.Fatalf("Resolve = %s, want under %s", got, dir)
	}
}

func TestWebhookRetries(t *testing.T) {
	c, err := Parse([]byte(`
segments:
  - {name: a, rule: 'x > 1', webhook: {url: "http://127.0.0.1:9/a", secret: s}}
  - {name: b, rule: 'x > 1', webhook: {url: "http://127.0.0.1:9/b", secret: s, max_retries: 0}}
  - {name: c, rule: 'x > 1', webhook: {url: "http://127.0.0.1:9/c", secret: s, max_retries: 3}}
`), "w.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{8, 0, 3} {
		if got := c.Segments[i].Webhook.Retries(); got != want {
			t.Errorf("segment %s: %d retries, want %d", c.Segments[i].Name, got, want)
		}
	}
}

// TestTopicsNamed: Named names every topic (a field added to Topics and
// forgotten there would stay empty, and a run would share it), each under
// base and none twice; with base "pulse" they are the defaults.
func TestTopicsNamed(t *testing.T) {
	var tp Topics
	tp.Named("run7")
	v := reflect.ValueOf(tp)
	seen := map[string]bool{}
	for i := range v.NumField() {
		name := v.Field(i).String()
		if !strings.HasPrefix(name, "run7.") || seen[name] {
			t.Errorf("%s = %q: want a name of its own under run7.", v.Type().Field(i).Name, name)
		}
		seen[name] = true
	}
	var c Config
	c.ApplyDefaults()
	tp.Named("pulse")
	if tp != c.Kafka.Topics {
		t.Errorf("Named(\"pulse\") = %+v, want the defaults %+v", tp, c.Kafka.Topics)
	}
}

func TestStreamStoreWrite(t *testing.T) {
	c, err := Parse([]byte("features:\n  - {name: n, agg: count}\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Stream.StoreWrite != StoreWriteCommitted {
		t.Fatalf("default store_write %q, want %q", c.Stream.StoreWrite, StoreWriteCommitted)
	}
	c, err = Parse([]byte("stream:\n  store_write: early\nfeatures:\n  - {name: n, agg: count}\n"), "p.yaml")
	if err != nil || c.Stream.StoreWrite != StoreWriteEarly {
		t.Fatalf("store_write early: %v, %q", err, c.Stream.StoreWrite)
	}
	_, err = Parse([]byte("stream:\n  store_write: later\nfeatures:\n  - {name: n, agg: count}\n"), "p.yaml")
	want := `p.yaml:2: stream.store_write: unknown value "later" (want committed or early)`
	if err == nil || err.Error() != want {
		t.Fatalf("store_write later: %v, want %s", err, want)
	}
}

func TestStreamCommitInterval(t *testing.T) {
	c, err := Parse([]byte("features:\n  - {name: n, agg: count}\n"), "p.yaml")
	if err != nil || c.Stream.CommitInterval != 0 {
		t.Fatalf("default commit_interval: %v, %v, want 0", err, c.Stream.CommitInterval)
	}
	c, err = Parse([]byte("stream:\n  commit_interval: 50ms\nfeatures:\n  - {name: n, agg: count}\n"), "p.yaml")
	if err != nil || c.Stream.CommitInterval.D() != 50*time.Millisecond {
		t.Fatalf("commit_interval 50ms: %v, %v", err, c.Stream.CommitInterval)
	}
	// With store_write: early the default is EarlyCommitInterval; a value
	// the file sets, 0 included, stays.
	for _, c := range []struct {
		stream string
		want   time.Duration
	}{
		{"{store_write: committed}", 0},
		{"{store_write: early}", 100 * time.Millisecond},
		{"{store_write: early, commit_interval: }", 100 * time.Millisecond},
		{"{store_write: early, commit_interval: 0}", 0},
		{"{store_write: early, commit_interval: 0s}", 0},
		{"{store_write: early, commit_interval: 1s}", time.Second},
		{"{store_write: committed, commit_interval: 30ms}", 30 * time.Millisecond},
	} {
		got, err := Parse([]byte("stream: "+c.stream+"\nfeatures:\n  - {name: n, agg: count}\n"), "p.yaml")
		if err != nil {
			t.Errorf("stream: %s: %v", c.stream, err)
		} else if got.Stream.CommitInterval.D() != c.want {
			t.Errorf("stream: %s: commit_interval %v, want %v", c.stream, got.Stream.CommitInterval, c.want)
		}
	}
	for _, v := range []string{"-1ms", "6s"} {
		_, err = Parse([]byte("stream:\n  commit_interval: "+v+"\nfeatures:\n  - {name: n, agg: count}\n"), "p.yaml")
		want := `p.yaml:2: stream.commit_interval: must be between 0 and 5s`
		if err == nil || err.Error() != want {
			t.Fatalf("commit_interval %s: %v, want %s", v, err, want)
		}
	}
}

func TestKafkaRetention(t *testing.T) {
	c, err := Parse([]byte("kafka:\n  retention: 30d\n"), "p.yaml")
	if err != nil || c.Kafka.Retention.D() != 30*24*time.Hour {
		t.Fatalf("30d: %v %v", c, err)
	}
	_, err = Parse([]byte("kafka:\n  retention: 12h\n"), "p.yaml")
	if err == nil || !strings.Contains(err.Error(), "p.yaml:2: kafka.retention: must be at least 1d (or 0: the broker's default), got 12h") {
		t.Fatalf("12h: %v", err)
	}
}
