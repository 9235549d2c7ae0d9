package model

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The golden files are written by scripts/golden.sh: models trained and
// scored by the real XGBoost, LightGBM and scikit-learn. The tracked ones
// live in testdata/golden; PULSE_GOLDEN_DIR points the tests at another
// set, which is how golden.sh checks a fresh one without touching the tree.
var goldenDir = envOr("PULSE_GOLDEN_DIR", "testdata/golden")

// demoModel is the model `pulse dev` serves; PULSE_DEMO_MODEL points at a
// freshly trained one (golden.sh).
var demoModel = envOr("PULSE_DEMO_MODEL", "../examples/ecommerce/models/purchase_propensity.json")

// churnModel is the e-commerce example's churn_risk trait model; the golden
// case demo_churn_risk holds the same file and XGBoost's scores for it.
var churnModel = envOr("PULSE_CHURN_MODEL", "../examples/ecommerce/models/churn_risk.json")

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

const (
	marginTol = 1e-5 // absolute, for margins and non-probability predictions
	probTol   = 1e-6 // absolute, for probabilities
)

type goldenMeta struct {
	Format         string   `json:"format"`
	Model          string   `json:"model"`
	Objective      string   `json:"objective"`
	NumClass       int      `json:"num_class"`
	NumFeatures    int      `json:"num_features"`
	Features       []string `json:"features"`
	Rows           int      `json:"rows"`
	LibraryClasses []int    `json:"library_classes"`
}

type goldenCase struct {
	meta    goldenMeta
	dir     string
	x       [][]float64
	margins [][]float64
	preds   [][]float64
}

func loadGolden(t testing.TB, dir string) goldenCase {
	t.Helper()
	c := goldenCase{dir: dir}
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &c.meta); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "cases.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	nf, nc := c.meta.NumFeatures, c.meta.NumClass
	for _, rec := range recs[1:] {
		if len(rec) != nf+2*nc {
			t.Fatalf("%s: row has %d columns, want %d", dir, len(rec), nf+2*nc)
		}
		row := make([]float64, len(rec))
		for i, s := range rec {
			if row[i], err = strconv.ParseFloat(s, 64); err != nil {
				t.Fatalf("%s: %v", dir, err)
			}
		}
		c.x = append(c.x, row[:nf])
		c.margins = append(c.margins, row[nf:nf+nc])
		c.preds = append(c.preds, row[nf+nc:])
	}
	if len(c.x) != c.meta.Rows {
		t.Fatalf("%s: %d rows, meta says %d", dir, len(c.x), c.meta.Rows)
	}
	return c
}

func (c goldenCase) parse(t testing.TB, format string) *Model {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(c.dir, c.meta.Model))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(data, format)
	if err != nil {
		t.Fatalf("Parse(%s): %v", c.dir, err)
	}
	return m
}

func goldenDirs(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatalf("%v (run scripts/golden.sh --update)", err)
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() && e.Name() != "refuse" {
			dirs = append(dirs, filepath.Join(goldenDir, e.Name()))
		}
	}
	if len(dirs) == 0 {
		t.Fatal("no golden cases: run scripts/golden.sh --update")
	}
	return dirs
}

func TestGolden(t *testing.T) {
	for _, dir := range goldenDirs(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			c := loadGolden(t, dir)
			if c.meta.Rows < 1000 {
				t.Errorf("only %d golden rows, want at least 1000", c.meta.Rows)
			}
			// Both with the format detected and given explicitly.
			m := c.parse(t, "")
			if m2 := c.parse(t, c.meta.Format); m2.Format() != m.Format() {
				t.Fatalf("detected %q, explicit %q", m.Format(), m2.Format())
			}
			if m.Format() != c.meta.Format || m.Objective() != c.meta.Objective ||
				m.NumClass() != c.meta.NumClass || m.NumFeatures() != c.meta.NumFeatures {
				t.Fatalf("got format %q objective %q classes %d features %d, want %+v",
					m.Format(), m.Objective(), m.NumClass(), m.NumFeatures(), c.meta)
			}
			if !slices.Equal(m.FeatureNames(), c.meta.Features) {
				t.Errorf("FeatureNames() = %v, want %v", m.FeatureNames(), c.meta.Features)
			}
			probs := m.link == linkSigmoid || m.link == linkSoftmax
			out := make([]float64, m.NumClass())
			var worstMargin, worstPred float64
			bad := 0
			for i, x := range c.x {
				m.Margin(x, out)
				for k, want := range c.margins[i] {
					d := math.Abs(out[k] - want)
					worstMargin = max(worstMargin, d)
					if !(d <= marginTol) && bad < 10 {
						bad++
						t.Errorf("row %d: margin[%d] = %.17g, want %.17g (x=%v)", i, k, out[k], want, x)
					}
				}
				m.Predict(x, out)
				for k, want := range c.preds[i] {
					d := math.Abs(out[k] - want)
					tol := probTol
					if !probs {
						tol = marginTol
					}
					worstPred = max(worstPred, d)
					if !(d <= tol) && bad < 10 {
						bad++
						t.Errorf("row %d: predict[%d] = %.17g, want %.17g (x=%v)", i, k, out[k], want, x)
					}
				}
				if c.meta.LibraryClasses != nil {
					if got := argmax(out); got != c.meta.LibraryClasses[i] {
						t.Errorf("row %d: argmax %d, library class %d", i, got, c.meta.LibraryClasses[i])
					}
				}
			}
			t.Logf("%d rows: worst margin diff %.3g, worst prediction diff %.3g", len(c.x), worstMargin, worstPred)
		})
	}
}

func argmax(v []float64) int {
	best := 0
	for i := range v {
		if v[i] > v[best] {
			best = i
		}
	}
	return best
}

func TestGoldenRefused(t *testing.T) {
	f := func(file, format, wantErr string) {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(goldenDir, "refuse", file))
		if err != nil {
			t.Fatal(err)
		}
		m, err := Parse(data, format)
		if err == nil {
			t.Errorf("%s: Parse succeeded (objective %q), want an error", file, m.Objective())
			return
		}
		if !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: error %q, want it to mention %q", file, err, wantErr)
		}
	}
	f("xgb_multi_output.json", "", "not supported")
	f("xgb_multi_output.json", "xgboost", "multi")
	f("xgb_gblinear.json", "", "gblinear is not supported")
	f("xgb_model.ubj", "", "UBJSON")
	f("xgb_model.ubj", "xgboost", "UBJSON")
	f("lgb_linear_tree.txt", "", "linear trees")
	f("lgb_linear_tree.txt", "lightgbm", "linear_tree=false")
}

// The demo model `pulse dev` serves must load and rank users sensibly.
func TestDemoModel(t *testing.T) {
	data, err := os.ReadFile(demoModel)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(data, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"orders_30d", "revenue_30d", "sessions_7d", "days_since_last_order", "products_viewed_24h", "cart_adds_24h"}
	if !slices.Equal(m.FeatureNames(), want) || m.Objective() != "binary:logistic" || m.NumClass() != 1 {
		t.Fatalf("got features %v objective %q classes %d", m.FeatureNames(), m.Objective(), m.NumClass())
	}
	p := func(x ...float64) float64 {
		out := []float64{0}
		m.Predict(x, out)
		return out[0]
	}
	never := p(0, 0, 1, -1, 0, 0)
	active := p(3, 250, 8, 2, 12, 3)
	if !(never < 0.2 && active > 0.6 && never < active) {
		t.Errorf("never-ordered user %.3f, active buyer %.3f: want low and high", never, active)
	}
}

// The example's churn_risk model (a predictive trait the stream scores) is
// the golden case demo_churn_risk's file, which TestGolden checks against
// XGBoost's own scores, and it ranks buyers sensibly.
func TestChurnModel(t *testing.T) {
	data, err := os.ReadFile(churnModel)
	if err != nil {
		t.Fatal(err)
	}
	golden, err := os.ReadFile(filepath.Join(goldenDir, "demo_churn_risk", "model.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, golden) {
		t.Fatalf("%s is not the golden case demo_churn_risk's model: run scripts/golden.sh --update", churnModel)
	}
	m, err := Parse(data, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"orders_365d", "revenue_365d", "days_since_last_order", "sessions_7d"}
	if !slices.Equal(m.FeatureNames(), want) || m.Objective() != "binary:logistic" || m.NumClass() != 1 {
		t.Fatalf("got features %v objective %q classes %d", m.FeatureNames(), m.Objective(), m.NumClass())
	}
	p := func(x ...float64) float64 {
		out := []float64{0}
		m.Predict(x, out)
		return out[0]
	}
	loyal := p(8, 600, 3, 6)
	lapsed := p(1, 40, 200, 0)
	if !(loyal < 0.3 && lapsed > 0.7) {
		t.Errorf("loyal buyer %.3f, lapsed one-time buyer %.3f: want low and high", loyal, lapsed)
	}
}
