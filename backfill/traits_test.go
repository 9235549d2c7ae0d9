package backfill

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/model"
)

// TestVerifyTraits: verify recomputes a predictive trait from the history
// (the model over the values as of the vector's time) and compares it with
// the online score: a vector without the score, or with a wrong one, is a
// mismatch; the stream's score (the model over the same values) is not.
func TestVerifyTraits(t *testing.T) {
	cfg, r, insert := setup(t)
	cfg.Traits = []config.Trait{{Name: "buyer_score", Model: "buyer", Entity: "user"}}
	now := time.Date(2024, 3, 11, 9, 30, 0, 123e6, time.UTC)
	insert(randomHistory(rand.New(rand.NewPCG(3, 4)), 200, now)...)
	store := newMemStore()
	if _, err := Features(context.Background(), cfg, r, store, FeaturesOptions{Now: now, BatchSize: 64}); err != nil {
		t.Fatal(err)
	}
	check := func(opts VerifyOptions) FeatureCheck {
		t.Helper()
		vr, err := Verify(context.Background(), cfg, r, store, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range vr.Features {
			if f.Feature == "buyer_score" {
				return f
			}
		}
		t.Fatalf("no buyer_score check in %+v", vr.Features)
		return FeatureCheck{}
	}
	// Backfill writes configured features only: every score is missing.
	if f := check(VerifyOptions{Sample: 50}); f.Compared != 50 || f.Mismatches != 50 {
		t.Fatalf("without scores: %+v", f)
	}
	// The stream's score: the model over the vector's own values.
	data, err := os.ReadFile(filepath.Join(cfg.Dir, "buyer.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Parse(data, "")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := sample(context.Background(), r, 50)
	if err != nil {
		t.Fatal(err)
	}
	vecs, found, err := store.GetMany(context.Background(), "user", ids)
	if err != nil {
		t.Fatal(err)
	}
	var ups []featurestore.Update
	for i, v := range vecs {
		if !found[i] {
			continue
		}
		x := []float64{math.NaN(), math.NaN()}
		for j, n := range m.FeatureNames() {
			if f, ok := v.Features[n].(float64); ok {
				x[j] = f
			}
		}
		out := []float64{0}
		m.Predict(x, out)
		v.Features["buyer_score"] = out[0]
		if i == 0 {
			v.Features["buyer_score"] = out[0] + 0.25 // a wrong score
		}
		ups = append(ups, featurestore.Update{Vector: v})
	}
	if err := store.Write(context.Background(), ups); err != nil {
		t.Fatal(err)
	}
	f := check(VerifyOptions{Features: []string{"buyer_score"}, Entities: ids})
	if f.Compared != len(ups) || f.Mismatches != 1 || f.Examples[0].EntityID != ids[0] {
		t.Fatalf("with the stream's scores, one wrong: %+v", f)
	}
	if !strings.Contains(f.Examples[0].Reason, "values differ") {
		t.Errorf("reason %q", f.Examples[0].Reason)
	}
}
