package model

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds Parse arbitrary bytes in every format. Whatever it
// accepts must score rows of any values without panicking or looping.
//
//	go test -run '^$' -fuzz FuzzParse -fuzztime 60s -fuzzminimizetime 5s ./model
func FuzzParse(f *testing.F) {
	f.Add([]byte(xgbOneSplit), "")
	f.Add([]byte(lgbModel), "")
	f.Add([]byte(`{"intercept": -1, "weights": {"a": 0.5, "b": 2}}`), "")
	f.Add([]byte(`{"intercept": [0.5], "coef": [[1, -1]], "features": ["a", "b"]}`), "logistic")
	// The golden models small enough to mutate usefully.
	files, _ := filepath.Glob(filepath.Join(goldenDir, "*", "model.*"))
	refused, _ := filepath.Glob(filepath.Join(goldenDir, "refuse", "*"))
	for _, p := range append(files, refused...) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if len(data) <= 64<<10 {
			f.Add(data, "")
		}
	}
	rows := [][]float64{
		{0, 0, 0, 0, 0, 0, 0, 0},
		{math.NaN(), math.NaN(), math.NaN(), math.NaN(), math.NaN(), math.NaN(), math.NaN(), math.NaN()},
		{1, -1, 2.5, 1e-36, -1e300, math.Inf(1), math.Inf(-1), 1 << 40},
	}
	f.Fuzz(func(t *testing.T, data []byte, format string) {
		m, err := Parse(data, format)
		if err != nil {
			if m != nil {
				t.Fatal("Parse returned a model and an error")
			}
			return
		}
		if m.NumFeatures() < 1 || m.NumClass() < 1 {
			t.Fatalf("accepted a model with %d features and %d classes", m.NumFeatures(), m.NumClass())
		}
		if names := m.FeatureNames(); names != nil && len(names) != m.NumFeatures() {
			t.Fatalf("%d feature names for %d features", len(names), m.NumFeatures())
		}
		if m.NumFeatures() > 1<<16 || m.NumClass() > 1<<10 {
			return // too big to score quickly; parsing it was the test
		}
		x := make([]float64, m.NumFeatures())
		out := make([]float64, m.NumClass())
		for _, r := range rows {
			for i := range x {
				x[i] = r[i%len(r)]
			}
			m.Margin(x, out)
			m.Predict(x, out)
		}
	})
}
