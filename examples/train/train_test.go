// Package train holds the analyst's training example (train.py) and the test
// that runs it end to end: history in ClickHouse -> `pulse backfill
// training-set` -> XGBoost in Python -> model.json registered in the config
// -> the Go evaluator scores the same rows as Python did.
package train

import (
	"context"
	"encoding/csv"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/model"
	"github.com/pulse-rt/pulse/scorer"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const trainYAML = `
clickhouse:
  addr: %s
  database: %s

# Comments and layout survive train.py --register.
features:
  - name: orders_7d
    agg: count
    event: Order Completed
    window: 7d
  - name: orders_30d
    agg: count
    event: Order Completed
    window: 30d
  - name: revenue_30d
    agg: sum
    event: Order Completed
    field: properties.revenue
    window: 30d
  - name: views_7d
    agg: count
    event: Product Viewed
    window: 7d
  - name: products_7d
    agg: distinct
    event: Product Viewed
    field: properties.product_id
    window: 7d
  - name: last_order_at
    agg: last
    event: Order Completed
    field: timestamp
  - name: days_since_last_order
    expr: 'last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1'
  - name: max_order_30d
    agg: max
    event: Order Completed
    field: properties.revenue
    window: 30d
`

var trainFeatures = []string{"orders_7d", "orders_30d", "revenue_30d", "views_7d", "products_7d", "days_since_last_order", "max_order_30d"}

// venvPython is the Python of the venv scripts/golden.sh builds.
func venvPython(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("PULSE_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache", "pulse")
	}
	py := filepath.Join(cache, "venv", "bin", "python")
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("no Python venv with xgboost at %s: run scripts/golden.sh (make test runs it first): %v", filepath.Dir(filepath.Dir(py)), err)
	}
	return py
}

// history makes shoppers whose ordering habits differ, and labels "1" for
// a user who orders in the 7 days after the label time: a signal the
// features can see (recent orders and views), with noise.
func makeHistory(end time.Time) ([]*event.Event, [][3]string) {
	rng := rand.New(rand.NewPCG(6, 7))
	var evs []*event.Event
	var labels [][3]string
	n := 0
	add := func(user, name string, at time.Time, props map[string]any) {
		n++
		evs = append(evs, &event.Event{Type: event.Track, MessageID: fmt.Sprint("train-", n), UserID: user, Event: name,
			Timestamp: at, ReceivedAt: at.Add(time.Second), Properties: props})
	}
	const users, days = 400, 60
	start := end.Add(-days * 24 * time.Hour)
	for u := range users {
		user := fmt.Sprint("user-", u)
		rate := rng.Float64() * rng.Float64() * 0.4 // orders per day
		var orders []time.Time
		for d := range days {
			day := start.Add(time.Duration(d) * 24 * time.Hour)
			for range rng.IntN(1 + int(rate*20)) {
				add(user, "Product Viewed", day.Add(time.Duration(rng.Int64N(int64(24*time.Hour)))), map[string]any{"product_id": fmt.Sprint("p", rng.IntN(40))})
			}
			if rng.Float64() < rate {
				at := day.Add(time.Duration(rng.Int64N(int64(24 * time.Hour))))
				orders = append(orders, at)
				add(user, "Order Completed", at, map[string]any{"revenue": float64(rng.IntN(20000)) / 100})
			}
		}
		for range 3 {
			at := start.Add(time.Duration(20*24*3600+rng.Int64N(30*24*3600)) * time.Second).Truncate(time.Millisecond)
			label := "0"
			for _, o := range orders {
				if !o.Before(at) && o.Before(at.Add(7*24*time.Hour)) {
					label = "1"
				}
			}
			ts := at.Format(time.RFC3339Nano)
			if len(labels)%2 == 1 {
				ts = strconv.FormatInt(at.UnixMilli(), 10) // both timestamp forms
			}
			labels = append(labels, [3]string{user, ts, label})
		}
	}
	return evs, labels
}

// TestTrainExample runs examples/train/train.py against a real ClickHouse
// and checks that the model it registers scores, in Go, exactly as XGBoost
// scored the same rows in Python.
func TestTrainExample(t *testing.T) {
	py := venvPython(t)
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	dir := t.TempDir()
	bin := testenv.BuildPulse(t)

	ctx := context.Background()
	conn, err := history.Open(config.ClickHouse{Addr: native, Database: db})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := history.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	evs, labels := makeHistory(time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC))
	if err := history.InsertEvents(ctx, conn, db, evs); err != nil {
		t.Fatal(err)
	}
	var lb strings.Builder
	lw := csv.NewWriter(&lb)
	lw.Write([]string{"entity_id", "timestamp", "label"})
	positives := 0
	for _, l := range labels {
		lw.Write(l[:])
		if l[2] == "1" {
			positives++
		}
	}
	lw.Flush()
	if positives < len(labels)/10 || positives > len(labels)*9/10 {
		t.Fatalf("%d positive labels of %d: the generator needs retuning", positives, len(labels))
	}
	labelsPath := filepath.Join(dir, "labels.csv")
	cfgPath := filepath.Join(dir, "pulse.yaml")
	if err := os.WriteFile(labelsPath, []byte(lb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, trainYAML, native, db), 0o644); err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(dir, "out")
	cmd := exec.Command(py, "train.py", "--pulse", bin, "--config", cfgPath, "--labels", labelsPath,
		"--features", strings.Join(trainFeatures, ","), "--name", "buyer", "--out", out, "--register")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("train.py: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("train.py stderr:\n%s", stderr.String())
	if !strings.HasPrefix(stdout.String(), "models:\n  - name: buyer\n") {
		t.Errorf("train.py printed %q, want the models: entry", stdout.String())
	}

	// The registered config loads and its model passes the scorer's checks.
	if out, err := exec.Command(bin, "validate", "-config", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("pulse validate after --register: %v\n%s", err, out)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("the config train.py registered the model in: %v", err)
	}
	if len(cfg.Models) != 1 || cfg.Models[0].Name != "buyer" {
		t.Fatalf("models after --register: %+v", cfg.Models)
	}
	mc := cfg.Models[0]
	if strings.Join(mc.Features, ",") != strings.Join(trainFeatures, ",") || strings.Join(mc.Labels, ",") != "0,1" {
		t.Errorf("registered features %v labels %v", mc.Features, mc.Labels)
	}
	if err := scorer.CheckModel(cfg, mc); err != nil {
		t.Fatalf("scorer refuses the trained model: %v", err)
	}
	data, err := os.ReadFile(cfg.Resolve(mc.Path))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Parse(data, mc.Format)
	if err != nil {
		t.Fatal(err)
	}

	// Every training row, scored in Go, matches Python's predict(DMatrix).
	f, err := os.Open(filepath.Join(out, "predictions.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if want := append(append([]string{"entity_id", "timestamp"}, trainFeatures...), "prediction"); strings.Join(recs[0], ",") != strings.Join(want, ",") {
		t.Fatalf("predictions.csv header %v, want %v", recs[0], want)
	}
	recs = recs[1:]
	if len(recs) != len(labels) {
		t.Fatalf("%d predictions for %d labels", len(recs), len(labels))
	}
	x := make([]float64, len(trainFeatures))
	got := make([]float64, 1)
	var lo, hi = 1.0, 0.0
	bad := 0
	for i, rec := range recs {
		for j := range trainFeatures {
			x[j] = math.NaN()
			if c := rec[2+j]; c != "" {
				if x[j], err = strconv.ParseFloat(c, 64); err != nil {
					t.Fatalf("row %d: %v", i, err)
				}
			}
		}
		want, err := strconv.ParseFloat(rec[len(rec)-1], 64)
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		m.Predict(x, got)
		if math.Abs(got[0]-want) > 1e-6 {
			if bad++; bad <= 5 {
				t.Errorf("row %d (%s at %s, x=%v): Go %.9f, Python %.9f", i, rec[0], rec[1], x, got[0], want)
			}
		}
		lo, hi = min(lo, want), max(hi, want)
	}
	if bad > 0 {
		t.Fatalf("%d of %d rows differ by more than 1e-6", bad, len(recs))
	}
	if hi-lo < 0.3 {
		t.Errorf("predictions span only [%.3f, %.3f]: the model learned nothing from the features", lo, hi)
	}
}
