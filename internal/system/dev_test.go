package system

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/backfill"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/internal/testenv"
)

func freePort(t *testing.T) int { return testenv.FreePort(t) }

// TestDevEndToEnd runs `pulse dev` on the example config (on free ports)
// and follows an event as a user would: posted to ingest, its features
// readable from the scorer within a second, a prediction with the demo
// model, the segment it entered, the trait score it got, the history in
// ClickHouse and `pulse backfill verify` agreeing with the online store,
// for people merged across devices too (checkMergedPeopleVerify).
func TestDevEndToEnd(t *testing.T) {
	// The example, with http destinations: pulse dev runs them in process.
	hooks := make(chan string, 100)
	scores := make(chan string, 100)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/scores" {
			select {
			case scores <- string(b):
			default: // the test reads the first ones only
			}
			return
		}
		hooks <- string(b)
	}))
	defer receiver.Close()
	src, err := os.ReadFile("../../examples/ecommerce/pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src = fmt.Appendf(src, `
destinations:
  - name: crm
    type: http
    url: %s
    template: '{"user": {{json .ID}}, "segment": {{json .Segment}}, "entered": {{.Entered}}, "revenue": {{json .Features.revenue_30d}}}'
    segments: [big_spenders]
    start_from: beginning
  - name: scores
    type: http
    url: %[1]s/scores
    template: '{"kind": {{json .Kind}}, "user": {{json .ID}}, "trait": {{json .Trait}}, "score": {{json .Score}}, "model": {{json .Model}}}'
    traits: [churn_risk]
    start_from: beginning
`, receiver.URL)
	cfg, err := config.Parse(src, "pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	exampleDir, err := filepath.Abs("../../examples/ecommerce")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = exampleDir
	destinations := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.DataDir = t.TempDir()
	cfg.Store.Path = filepath.Join(cfg.DataDir, "store")
	cfg.Kafka.Brokers = []string{fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	cfg.Ingest.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Scorer.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Stream.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// dev normalises cfg as it starts: read what the test needs first.
	ingest, scorer := "http://"+cfg.Ingest.Listen, "http://"+cfg.Scorer.Listen
	broker, dataDir := cfg.Kafka.Brokers[0], cfg.DataDir
	chHTTP, chTCP := freePort(t), freePort(t)
	go func() {
		done <- Dev(ctx, cfg, DevOptions{ClickHouseTCP: chTCP, ClickHouseHTTP: chHTTP, DestinationsListen: destinations})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pulse dev: %v", err)
			}
		case <-time.After(30 * time.Second):
			var buf strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Errorf("pulse dev did not stop within 30s; goroutines:\n%s", buf.String())
		}
	})

	call := func(method, url, key, body string) (int, string) {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.SetBasicAuth(key, "")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testenv.WaitFor(t, 30*time.Second, "ingest and scorer ready", func() bool {
		a, _ := call("GET", ingest+"/readyz", "", "")
		b, _ := call("GET", scorer+"/healthz", "", "")
		return a == 200 && b == 200
	})
	checkDevRetention(t, broker, cfg.Kafka.Topics)

	body := `{"batch":[
	  {"type":"identify","userId":"612","traits":{"country":"FR"}},
	  {"type":"track","userId":"612","event":"Order Completed","properties":{"revenue":420}},
	  {"type":"track","userId":"612","event":"Order Completed","properties":{"revenue":180}}]}`
	// The stream may still be joining its group: the first write can take
	// a moment, so give the first event up to 10s, then time the second.
	if code, b := call("POST", ingest+"/v1/batch", "dev-write-key", body); code != 200 {
		t.Fatalf("batch: %d %s", code, b)
	}
	var entity struct {
		Features map[string]any `json:"features"`
		Segments []string       `json:"segments"`
	}
	getEntity := func() bool {
		code, b := call("GET", scorer+"/v1/entities/user/612", "dev-read-key", "")
		if code != 200 {
			return false
		}
		if err := json.Unmarshal([]byte(b), &entity); err != nil {
			t.Fatalf("entity: %v: %s", err, b)
		}
		return true
	}
	testenv.WaitFor(t, 10*time.Second, "user 612 in the online store", func() bool { return getEntity() && entity.Features["orders_lifetime"] == 2.0 })
	if entity.Features["revenue_30d"] != 600.0 || entity.Features["country"] != "FR" {
		t.Fatalf("features: %v", entity.Features)
	}
	if !contains(entity.Segments, "big_spenders") {
		t.Fatalf("segments %v: want big_spenders (revenue_30d 600 > 500)", entity.Segments)
	}

	// The destination heard of the entry, with the features.
	select {
	case b := <-hooks:
		if b != `{"user": "612", "segment": "big_spenders", "entered": true, "revenue": 600}` {
			t.Fatalf("destination got %s", b)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the destination got nothing within 30s")
	}
	// The trait destination heard of 612's churn_risk score, from the
	// stream's pulse.traits.
	select {
	case b := <-scores:
		var m struct {
			Kind, User, Trait, Model string
			Score                    *float64
		}
		if err := json.Unmarshal([]byte(b), &m); err != nil || m.Kind != "trait" || m.User != "612" || m.Trait != "churn_risk" ||
			m.Model != "churn_risk" || m.Score == nil || *m.Score < 0 || *m.Score > 1 {
			t.Fatalf("trait destination got %s (%v)", b, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the trait destination got nothing within 30s")
	}
	if code, b := call("GET", "http://"+destinations+"/v1/destinations", "dev-admin-key", ""); code != 200 || !strings.Contains(b, `"name":"crm"`) ||
		!strings.Contains(b, `"name":"scores","type":"http","segments":null,"traits":["churn_risk"]`) {
		t.Fatalf("destinations admin API: %d %s", code, b)
	}

	// Freshness as a user sees it: accepted -> readable, and how soon
	// (logged: asserted on the wall clock, a busy machine would fail it;
	// `pulse loadtest freshness` measures it).
	start := time.Now()
	if code, b := call("POST", ingest+"/v1/track", "dev-write-key", `{"userId":"612","event":"Order Completed","properties":{"revenue":1}}`); code != 200 {
		t.Fatalf("track: %d %s", code, b)
	}
	testenv.WaitFor(t, 30*time.Second, "the new order readable", func() bool { return getEntity() && entity.Features["orders_lifetime"] == 3.0 })
	t.Logf("event accepted -> readable from the scorer in %s", time.Since(start))

	code, b := call("POST", scorer+"/v1/predict", "", `{"api_key":"dev-read-key","model":"purchase_propensity","features":[{"user":{"id":612}},{"user":{"id":"nobody"}}]}`)
	if code != 200 {
		t.Fatalf("predict: %d %s", code, b)
	}
	var preds []map[string]any
	if err := json.Unmarshal([]byte(b), &preds); err != nil || len(preds) != 2 {
		t.Fatalf("predict answer %s: %v", b, err)
	}
	if preds[0]["model_used"] != true || preds[1]["model_used"] != false || preds[1]["prediction"] != "no" {
		t.Fatalf("predictions: %s", b)
	}

	// The history: pulse dev started a local ClickHouse and copies the
	// events into it, where an analyst can query them.
	query := func(sql string) string {
		resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/", chHTTP), "text/plain", strings.NewReader(sql))
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b))
	}
	testenv.WaitFor(t, 30*time.Second, "the events in ClickHouse", func() bool {
		return query("SELECT count() FROM pulse.events FINAL WHERE user_id = '612'") == "4"
	})
	if got := query("SELECT sum(revenue) FROM pulse.events FINAL WHERE user_id = '612' AND event = 'Order Completed'"); got != "601" {
		t.Fatalf("revenue in ClickHouse: %s", got)
	}
	testenv.WaitFor(t, 30*time.Second, "the predictions in ClickHouse", func() bool {
		return query("SELECT count() FROM pulse.predictions") == "2"
	})

	// The commands run beside dev find it: dev.json names its ClickHouse
	// (which the config left unset) and scorer, and verify, which cannot
	// open the Pebble store dev holds, reads it through the scorer and
	// agrees with the history.
	st, err := ReadDevState(dataDir)
	if err != nil || st == nil {
		t.Fatalf("dev state: %v, %v", st, err)
	}
	if st.PID != os.Getpid() || st.ClickHouse != fmt.Sprintf("127.0.0.1:%d", chTCP) || "http://"+st.Scorer != scorer || st.Store == "" {
		t.Fatalf("dev state %+v: want this process, its ClickHouse on %d, its scorer and store", st, chTCP)
	}
	beside, err := config.Parse(src, "pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	beside.Dir = exampleDir // its models: verify scores the traits
	st.Apply(beside)
	if beside.ClickHouse.Addr != st.ClickHouse || beside.Kafka.Brokers[0] != broker {
		t.Fatalf("Apply: clickhouse %q brokers %v, want dev's", beside.ClickHouse.Addr, beside.Kafka.Brokers)
	}
	conn, err := history.Open(beside.ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	served := featurestore.OpenServed(st.Scorer, "dev-read-key")
	rep, err := backfill.Verify(context.Background(), beside, history.NewReader(conn, beside.ClickHouse.Database), served, backfill.VerifyOptions{Entities: []string{"612"}})
	if err != nil {
		t.Fatal(err)
	}
	compared := 0
	for _, f := range rep.Features {
		compared += f.Compared
	}
	if compared == 0 || rep.Mismatches() != 0 || len(rep.Missing) != 0 {
		var b strings.Builder
		rep.Write(&b)
		t.Fatalf("verify beside dev: %d compared, %d mismatches, %d missing:\n%s", compared, rep.Mismatches(), len(rep.Missing), b.String())
	}

	// People who browse on devices and log in later: the stream merges
	// them, and verify, resolving the history the backfill's way, agrees.
	m := checkMergedPeopleVerify(t, beside, ingest, scorer, served, history.NewReader(conn, beside.ClickHouse.Database), call)
	// A person deleted on request: gone online and from the history.
	checkDeletePerson(t, beside, ingest, scorer, served, history.NewReader(conn, beside.ClickHouse.Database), call, m)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// checkDevRetention: pulse dev gives the topics that expire records the
// week a broker keeps by default (its embedded Kafka's own default is
// never, so that the compacted topics keep every key, as Kafka's do;
// kafka.TestEmbeddedRetention), and gives the compacted ones none of
// their own ("default": kfake describes its static default there, not
// the broker's -1 it cleans by).
func checkDevRetention(t *testing.T, broker string, topics config.Topics) {
	t.Helper()
	want := map[string]string{topics.Events: "604800000", topics.Resolved: "604800000", topics.State: "default", topics.Suppressions: "default"}
	got := testenv.Retention(t, []string{broker}, topics.Events, topics.Resolved, topics.State, topics.Suppressions)
	for topic, v := range want {
		if got[topic] != v {
			t.Errorf("%s: retention.ms %s, want %s", topic, got[topic], v)
		}
	}
}
