package backfill

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/rfm"
)

// rfmYAML is testYAML with a recency feature and an rfm block.
var rfmYAML = strings.Replace(testYAML, "models:", `  - name: days_since_last_order
    expr: 'last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1'
rfm:
  recency: days_since_last_order
  frequency: orders_lifetime
  monetary: revenue_24h
models:`, 1)

// TestVerifyRFM: with the boundaries, verify recomputes rfm_r, rfm_f,
// rfm_m and rfm_group (rfm.Assign over the recomputed values) and compares
// them with the online ones: missing ones and a wrong group are
// mismatches, the stream's are not; a vector older than the boundaries is
// said to be one the re-score has not reached; without boundaries the
// RFM features are skipped, or refused when named.
func TestVerifyRFM(t *testing.T) {
	base, r, insert := setup(t)
	cfg, err := config.Parse([]byte(rfmYAML), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClickHouse, cfg.Dir = base.ClickHouse, base.Dir
	now := time.Date(2024, 3, 11, 9, 30, 0, 123e6, time.UTC)
	insert(randomHistory(rand.New(rand.NewPCG(5, 6)), 200, now)...)
	store := newMemStore()
	if _, err := Features(context.Background(), cfg, r, store, FeaturesOptions{Now: now, BatchSize: 64}); err != nil {
		t.Fatal(err)
	}
	b := &rfm.Boundaries{Version: 7, Scores: 5, R: []float64{1, 3, 5, 7}, F: []float64{2, 4, 8, 12}, M: []float64{50, 150, 300, 600}, At: now.Add(-time.Hour)}
	ids, err := sample(context.Background(), r, 60)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(opts VerifyOptions) map[string]FeatureCheck {
		t.Helper()
		opts.Entities = ids
		vr, err := Verify(context.Background(), cfg, r, store, opts)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]FeatureCheck{}
		for _, f := range vr.Features {
			out[f.Feature] = f
		}
		return out
	}
	// Backfill writes configured features only: every group is missing.
	got := verify(VerifyOptions{RFM: b})
	if f := got[config.FeatureRFMGroup]; f.Compared != len(ids) || f.Mismatches != len(ids) {
		t.Fatalf("without the RFM features: %+v", f)
	}
	if _, ok := got["orders_lifetime"]; !ok {
		t.Fatalf("with no feature named, the configured ones are checked too: %v", got)
	}
	// The stream's values: rfm.Assign over the vector's own values; one
	// group wrong.
	groups, _ := cfg.RFM.Table()
	vecs, found, err := store.GetMany(context.Background(), "user", ids)
	if err != nil {
		t.Fatal(err)
	}
	num := func(v any) float64 {
		if f, ok := v.(float64); ok {
			return f
		}
		return math.NaN()
	}
	var ups []featurestore.Update
	wrong, buyers := "", 0
	for i, v := range vecs {
		if !found[i] {
			t.Fatalf("%s not in the store", ids[i])
		}
		a := rfm.Assign(b, 5, groups, num(v.Features["days_since_last_order"]), num(v.Features["orders_lifetime"]), num(v.Features["revenue_24h"]))
		if a.R > 0 {
			buyers++
			v.Features[config.FeatureRFMR], v.Features[config.FeatureRFMF], v.Features[config.FeatureRFMM] = float64(a.R), float64(a.F), float64(a.M)
		}
		v.Features[config.FeatureRFMGroup] = a.Group
		if wrong == "" && a.Group != rfm.Prospects {
			wrong = v.ID
			v.Features[config.FeatureRFMGroup] = "not_" + a.Group
		}
		ups = append(ups, featurestore.Update{Vector: v})
	}
	if buyers == 0 || buyers == len(ids) {
		t.Fatalf("%d buyers of %d: the sample should hold buyers and prospects", buyers, len(ids))
	}
	if err := store.Write(context.Background(), ups); err != nil {
		t.Fatal(err)
	}
	got = verify(VerifyOptions{RFM: b, Features: []string{config.FeatureRFMR, config.FeatureRFMF, config.FeatureRFMM, config.FeatureRFMGroup}})
	if len(got) != 4 {
		t.Fatalf("checked %d features, want the 4 named", len(got))
	}
	for _, n := range []string{config.FeatureRFMR, config.FeatureRFMF, config.FeatureRFMM} {
		if f := got[n]; f.Compared != len(ids) || f.Mismatches != 0 {
			t.Errorf("%s: %+v", n, f)
		}
	}
	f := got[config.FeatureRFMGroup]
	if f.Mismatches != 1 || f.Examples[0].EntityID != wrong || !strings.Contains(f.Examples[0].Reason, "version 7") {
		t.Fatalf("one wrong group: %+v", f)
	}
	// Boundaries newer than the vectors: the re-score has not reached them.
	later := *b
	later.At = now.Add(time.Hour)
	f = verify(VerifyOptions{RFM: &later, Features: []string{config.FeatureRFMGroup}})[config.FeatureRFMGroup]
	if f.Mismatches != 1 || !strings.Contains(f.Examples[0].Reason, "re-score has not reached it") {
		t.Fatalf("vector older than the boundaries: %+v", f)
	}
	// No boundaries: skipped, or refused when named.
	if _, ok := verify(VerifyOptions{})[config.FeatureRFMGroup]; ok {
		t.Error("rfm_group checked without boundaries")
	}
	if _, err := Verify(context.Background(), cfg, r, store, VerifyOptions{Entities: ids, Features: []string{config.FeatureRFMR}}); err == nil || !strings.Contains(err.Error(), "no RFM boundaries") {
		t.Errorf("rfm_r named without boundaries: %v", err)
	}
}
