package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pulse-rt/pulse/internal/testenv"
)

// TestDashboardsAndAlertsOnLiveMetrics runs `pulse dev` (the real binary,
// history into the test ClickHouse, a segment webhook and an http
// destination to a receiver that refuses everything, an http destination
// to one that takes everything), sends it a little traffic as a user
// would, and scrapes it with a real Prometheus (Debian's) loaded with
// deploy/prometheus/rules. Then: every metric a dashboard panel or an
// alert names exists, every panel's query answers with data, every rule
// evaluates without error, the dead-letter alert fires for the webhook and
// the destination whose deliveries failed, and the failing-destination
// alert is pending for them and not for the one that delivers.
func TestDashboardsAndAlertsOnLiveMetrics(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus is not installed: run `make test-deps` (apt-get install prometheus): %v", err)
	}
	pulse := testenv.BuildPulse(t)
	dir := t.TempDir()

	// A receiver that takes what comes to /ok and answers 500 to the
	// rest: the webhook (no retries) and the destination `refused` (one
	// retry) dead-letter each change, `crm` delivers it.
	var delivered atomic.Int64
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/ok" {
			delivered.Add(1)
			return
		}
		http.Error(w, "refused on purpose", http.StatusInternalServerError)
	}))
	t.Cleanup(receiver.Close)
	// pulse dev serves the destinations' admin API, with /metrics, on
	// -destinations-listen: Prometheus scrapes job pulse-destinations there.
	destinationsAddr := testenv.FreeAddr(t)

	// The e-commerce example on free ports, its models beside it.
	native, _ := testenv.ClickHouse(t)
	addrs := map[string]string{"ingest": testenv.FreeAddr(t), "scorer": testenv.FreeAddr(t), "stream": testenv.FreeAddr(t)}
	cfg := map[string]any{}
	readYAML(t, filepath.Join(root, "examples", "ecommerce", "pulse.yaml"), &cfg)
	cfg["data_dir"] = filepath.Join(dir, "data")
	cfg["kafka"].(map[string]any)["brokers"] = []string{testenv.FreeAddr(t)}
	for svc, a := range addrs {
		cfg[svc] = map[string]any{"listen": a}
	}
	cfg["clickhouse"] = map[string]any{"addr": native, "database": testenv.ClickHouseDatabase(t)}
	hooked := false
	for _, s := range cfg["segments"].([]any) {
		if seg := s.(map[string]any); seg["name"] == "big_spenders" {
			seg["webhook"] = map[string]any{"url": receiver.URL + "/webhook", "secret": "deploy-test", "max_retries": 0, "timeout": "2s"}
			hooked = true
		}
	}
	if !hooked {
		t.Fatal("the example has no segment big_spenders")
	}
	body := `{"id": {{json .ID}}, "segment": {{json .Segment}}, "entered": {{.Entered}}}`
	cfg["destinations"] = []any{
		map[string]any{"name": "crm", "type": "http", "url": receiver.URL + "/ok", "template": body,
			"segments": []string{"big_spenders"}, "start_from": "beginning"},
		map[string]any{"name": "refused", "type": "http", "url": receiver.URL + "/refuse", "template": body,
			"segments": []string{"big_spenders"}, "start_from": "beginning", "max_retries": 1, "timeout": "2s"},
		// A trait destination: the example's churn_risk scores.
		map[string]any{"name": "scores", "type": "http", "url": receiver.URL + "/ok",
			"template": `{"id": {{json .ID}}, "trait": {{json .Trait}}, "score": {{json .Score}}}`,
			"traits":   []string{"churn_risk"}, "start_from": "beginning"},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "pulse.yaml")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	models, _ := filepath.Abs(filepath.Join(root, "examples", "ecommerce", "models"))
	if err := os.Symlink(models, filepath.Join(dir, "models")); err != nil {
		t.Fatal(err)
	}
	start(t, "pulse dev", filepath.Join(dir, "dev.log"), pulse, "dev", "-config", cfgPath, "-destinations-listen", destinationsAddr)
	ingest, scorer := "http://"+addrs["ingest"], "http://"+addrs["scorer"]
	testenv.WaitFor(t, 2*time.Minute, "pulse dev ready (ingest and scorer /readyz)", func() bool {
		return get(ingest+"/readyz", "") == http.StatusOK && get(scorer+"/readyz", "") == http.StatusOK
	})

	// Prometheus scrapes every job of deploy/prometheus/prometheus.yml:
	// pulse dev runs every service in one process and serves all their
	// metrics on each listener, so a service with no listener of its own
	// there (history, webhooks) is scraped on the stream's.
	addrs["destinations"] = destinationsAddr
	promAddr := testenv.FreeAddr(t)
	rules, _ := filepath.Abs(filepath.Join(promDir, "rules", "*.yml"))
	promCfg := map[string]any{
		"global":     map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"},
		"rule_files": []string{rules},
	}
	var jobs []map[string]any
	for job := range scrapeJobs(t) {
		target, ok := addrs[strings.TrimPrefix(job, "pulse-")]
		if !ok {
			target = addrs["stream"]
		}
		jobs = append(jobs, map[string]any{"job_name": job, "static_configs": []any{map[string]any{"targets": []string{target}}}})
	}
	promCfg["scrape_configs"] = jobs
	b, _ = yaml.Marshal(promCfg)
	promPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(promPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, "prometheus", filepath.Join(dir, "prometheus.log"), promBin, "--config.file="+promPath,
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+promAddr, "--log.level=warn")
	prom := "http://" + promAddr
	testenv.WaitFor(t, time.Minute, "Prometheus ready", func() bool { return get(prom+"/-/ready", "") == http.StatusOK })

	// A little traffic: orders that put two users in big_spenders (one at
	// a time, so that the dead-letter counter is scraped before it grows),
	// an identify and a page view, an event ingest refuses, a prediction,
	// an entity lookup.
	order := func(user string) {
		t.Helper()
		post(t, ingest+"/v1/batch", "dev-write-key", fmt.Sprintf(`{"batch":[
			{"type":"track","userId":%[1]q,"event":"Order Completed","properties":{"revenue":600}},
			{"type":"track","userId":%[1]q,"event":"Product Viewed","properties":{"product_id":"p1","category":"shoes"}},
			{"type":"identify","userId":%[1]q,"traits":{"country":"NL"}},
			{"type":"page","userId":%[1]q,"name":"Home"}]}`, user), http.StatusOK)
	}
	order("deploy-1")
	post(t, ingest+"/v1/track", "dev-write-key", `{"event":"Order Completed"}`, http.StatusBadRequest)
	testenv.WaitFor(t, time.Minute, "deploy-1's features in the scorer", func() bool {
		return get(scorer+"/v1/entities/user/deploy-1", "dev-read-key") == http.StatusOK
	})
	post(t, scorer+"/v1/predict", "", `{"api_key":"dev-read-key","model":"purchase_propensity","features":[{"user":{"id":"deploy-1"}}]}`, http.StatusOK)
	// The dead-letter series are there at 0 from the start; once the
	// first dead letters are scraped, the second user's make them grow
	// within the alert's window whatever the scrape timing.
	testenv.WaitFor(t, time.Minute, "the first dead letters scraped (webhook:big_spenders and refused)", func() bool {
		return len(query(t, prom, `pulse_destination_dead_letters_total{destination="webhook:big_spenders"} > 0`)) > 0 &&
			len(query(t, prom, `pulse_destination_dead_letters_total{destination="refused", reason="retries_exhausted"} > 0`)) > 0
	})
	order("deploy-2")
	testenv.WaitFor(t, time.Minute, "crm's deliveries scraped", func() bool {
		return len(query(t, prom, `pulse_destination_delivered_total{destination="crm", job="pulse-destinations"} >= 2`)) > 0
	})
	if n := delivered.Load(); n < 2 {
		t.Errorf("the receiver got %d deliveries for crm, want both users' entries", n)
	}
	if len(query(t, prom, `pulse_destination_retries_total{destination="refused", kind="segment"} > 0`)) == 0 {
		t.Error("refused's retry is not counted")
	}
	testenv.WaitFor(t, time.Minute, "the trait destination's deliveries scraped", func() bool {
		return len(query(t, prom, `pulse_destination_delivered_total{destination="scores", kind="trait", job="pulse-destinations"} >= 2`)) > 0
	})

	// Every metric named exists.
	named := map[string][]string{} // metric -> where
	for f, d := range dashboards(t) {
		for _, p := range d.Panels {
			for _, q := range p.Targets {
				for _, m := range metricsIn(q.Expr) {
					named[m] = append(named[m], fmt.Sprintf("%s %q", filepath.Base(f), p.Title))
				}
			}
		}
	}
	for f, rs := range alertRules(t) {
		for _, r := range rs {
			for _, m := range metricsIn(r.Expr) {
				named[m] = append(named[m], filepath.Base(f)+" "+r.Alert)
			}
		}
	}
	var missing []string
	waitUntil(2*time.Minute, func() bool {
		have := map[string]bool{}
		for _, n := range labelValues(t, prom, "__name__") {
			have[n] = true
		}
		missing = missing[:0]
		for m := range named {
			if !have[m] {
				missing = append(missing, fmt.Sprintf("%s (in %s)", m, strings.Join(named[m], ", ")))
			}
		}
		return len(missing) == 0
	})
	slices.Sort(missing)
	for _, m := range missing {
		t.Errorf("not exported by a running pulse dev: %s", m)
	}

	// Every panel's query answers with data, as Grafana would ask it.
	var empty []string
	waitUntil(time.Minute, func() bool {
		empty = empty[:0]
		for f, d := range dashboards(t) {
			for _, p := range d.Panels {
				for _, q := range p.Targets {
					expr := strings.ReplaceAll(q.Expr, "$__rate_interval", "1m")
					if len(query(t, prom, expr)) == 0 {
						empty = append(empty, fmt.Sprintf("%s %q: %s", filepath.Base(f), p.Title, expr))
					}
				}
			}
		}
		return len(empty) == 0
	})
	for _, e := range empty {
		t.Errorf("panel query answers nothing: %s", e)
	}

	// Every rule evaluates (on the live series) without error.
	var bad []string
	waitUntil(time.Minute, func() bool {
		bad = bad[:0]
		var r struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name, Health, LastError string
					}
				}
			}
		}
		apiGet(t, prom+"/api/v1/rules", &r)
		n := 0
		for _, g := range r.Data.Groups {
			for _, rl := range g.Rules {
				n++
				if rl.Health != "ok" {
					bad = append(bad, fmt.Sprintf("%s: %s %s", rl.Name, rl.Health, rl.LastError))
				}
			}
		}
		if n == 0 {
			bad = append(bad, "no rules loaded")
		}
		return len(bad) == 0
	})
	for _, e := range bad {
		t.Errorf("rule: %s", e)
	}

	// The dead letters of the refused webhook and destination raise their
	// alert; both fail every attempt, so the failing alert is pending (for
	// 15 minutes before it fires), and not for crm.
	wantFiring := []string{"PulseDestinationDeadLetters webhook:big_spenders", "PulseDestinationDeadLetters refused"}
	wantPending := []string{"PulseDestinationFailing webhook:big_spenders", "PulseDestinationFailing refused"}
	var firing, pending []string
	waitUntil(time.Minute, func() bool {
		var r struct {
			Data struct {
				Alerts []struct {
					Labels map[string]string
					State  string
				}
			}
		}
		apiGet(t, prom+"/api/v1/alerts", &r)
		firing, pending = firing[:0], pending[:0]
		for _, a := range r.Data.Alerts {
			name := a.Labels["alertname"] + " " + a.Labels["destination"]
			switch a.State {
			case "firing":
				firing = append(firing, name)
			case "pending":
				pending = append(pending, name)
			}
		}
		return containsAll(firing, wantFiring) && containsAll(append(pending, firing...), wantPending)
	})
	if !containsAll(firing, wantFiring) {
		t.Errorf("want %v firing; firing: %v", wantFiring, firing)
	}
	if !containsAll(append(pending, firing...), wantPending) {
		t.Errorf("want %v pending; pending: %v, firing: %v", wantPending, pending, firing)
	}
	for _, a := range append(pending, firing...) {
		if strings.HasSuffix(a, " crm") {
			t.Errorf("%s: crm delivers everything", a)
		}
	}
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// start runs a child process until the test ends, its output in logPath
// (shown when the test fails); it is interrupted, then killed after 30 s.
func start(t *testing.T, name, logPath, bin string, args ...string) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30s of SIGINT; killed", name)
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			if len(out) > 20000 {
				out = out[len(out)-20000:]
			}
			t.Logf("%s's log (tail):\n%s", name, out)
		}
	})
}

// waitUntil polls cond every 250 ms until it holds or d has passed; the
// caller reports what is still wrong.
func waitUntil(d time.Duration, cond func() bool) {
	deadline := time.Now().Add(d)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
	}
}

var client = &http.Client{Timeout: 10 * time.Second}

func get(u, key string) int {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func post(t *testing.T, u, writeKey, body string, want int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if writeKey != "" {
		req.SetBasicAuth(writeKey, "")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %d %s, want %d", u, resp.StatusCode, b, want)
	}
}

func apiGet(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := client.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// query runs an instant query and returns its series; a query Prometheus
// refuses fails the test.
func query(t *testing.T, prom, expr string) []json.RawMessage {
	t.Helper()
	var r struct {
		Data struct {
			Result []json.RawMessage
		}
	}
	apiGet(t, prom+"/api/v1/query?query="+url.QueryEscape(expr), &r)
	return r.Data.Result
}

func labelValues(t *testing.T, prom, label string) []string {
	t.Helper()
	var r struct{ Data []string }
	apiGet(t, prom+"/api/v1/label/"+label+"/values", &r)
	return r.Data
}
