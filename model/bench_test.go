package model

import (
	"path/filepath"
	"testing"
)

// The benchmark models are 100 trees of depth 6 over 20 features, trained by
// scripts/golden.sh; rows are the golden rows (with NaNs and split values).
//
//	go test -run '^$' -bench Predict -benchtime 20000x ./model

func benchmarkPredict(b *testing.B, name string) {
	c := loadGolden(b, filepath.Join(goldenDir, name))
	m := c.parse(b, "")
	out := make([]float64, m.NumClass())
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		m.Predict(c.x[i%len(c.x)], out)
	}
}

func BenchmarkPredictXGBoost100x6(b *testing.B)  { benchmarkPredict(b, "bench_xgb") }
func BenchmarkPredictLightGBM100x6(b *testing.B) { benchmarkPredict(b, "bench_lgb") }
func BenchmarkPredictLogistic(b *testing.B)      { benchmarkPredict(b, "logistic_weights") }

func BenchmarkParseXGBoost100x6(b *testing.B) {
	c := loadGolden(b, filepath.Join(goldenDir, "bench_xgb"))
	b.ReportAllocs()
	for b.Loop() {
		c.parse(b, "xgboost")
	}
}

func TestPredictAllocs(t *testing.T) {
	for _, name := range []string{"bench_xgb", "bench_lgb", "xgb_softprob", "xgb_categorical", "lgb_categorical", "lgb_multiclass", "lgb_rf", "logistic_weights"} {
		c := loadGolden(t, filepath.Join(goldenDir, name))
		m := c.parse(t, "")
		out := make([]float64, m.NumClass())
		x := c.x[0]
		if n := testing.AllocsPerRun(100, func() { m.Predict(x, out) }); n != 0 {
			t.Errorf("%s: Predict allocates %v times per row", name, n)
		}
	}
}
