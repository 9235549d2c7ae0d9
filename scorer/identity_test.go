package scorer_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/scorer"
)

// An entity merged into another (identity resolution: the stream leaves
// its vector with CanonicalID) answers the canonical person's features
// and segments, with canonical_id, through a chain of merges; through the
// real Pebble store, so the vector encoding carries CanonicalID.
func TestEntityMergedAnswersCanonical(t *testing.T) {
	st, err := featurestore.OpenPebble(filepath.Join(t.TempDir(), "store"), featurestore.PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	empty := map[string]any{"revenue_30d": 0.0}
	err = st.Write(context.Background(), []featurestore.Update{
		{Vector: featurestore.Vector{Entity: "user", ID: "V", Features: buyer(), Segments: []string{"big_spenders"}, UpdatedAt: at}, Enter: []string{"big_spenders"}},
		{Vector: featurestore.Vector{Entity: "user", ID: "U", Features: empty, UpdatedAt: at, CanonicalID: "V"}},
		{Vector: featurestore.Vector{Entity: "user", ID: "A", Features: empty, UpdatedAt: at, CanonicalID: "U"}},
		{Vector: featurestore.Vector{Entity: "user", ID: "B", Features: empty, UpdatedAt: at, CanonicalID: "W"}}, // W not written yet
	})
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, newConfig(t, testConfig), st)
	f := func(id, wantCanonical string, wantRevenue float64) {
		t.Helper()
		code, body := h.do("GET", "/v1/entities/user/"+id, "read-key", "")
		var e scorer.Entity
		if err := json.Unmarshal([]byte(body), &e); code != 200 || err != nil {
			t.Fatalf("GET %s: %d %s %v", id, code, body, err)
		}
		if e.ID != id || e.CanonicalID != wantCanonical || e.Features["revenue_30d"] != wantRevenue {
			t.Errorf("GET %s: id %s canonical_id %s revenue_30d %v, want %s %s %v", id, e.ID, e.CanonicalID, e.Features["revenue_30d"], id, wantCanonical, wantRevenue)
		}
	}
	f("V", "V", 640)
	f("U", "V", 640)
	f("A", "V", 640)
	f("B", "W", 0)
}

// A prediction for an id merged into another person scores that person's
// features, in every store.
func TestPredictMergedScoresCanonical(t *testing.T) {
	f := func(t *testing.T, st featurestore.Store) {
		at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
		seed(t, st, map[string]map[string]any{"612": buyer()}, nil)
		err := st.Write(context.Background(), []featurestore.Update{
			{Vector: featurestore.Vector{Entity: "user", ID: "anon-1", Features: map[string]any{"orders_30d": 0.0}, UpdatedAt: at, CanonicalID: "u-mid"}},
			{Vector: featurestore.Vector{Entity: "user", ID: "u-mid", Features: map[string]any{"orders_30d": 0.0}, UpdatedAt: at, CanonicalID: "612"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		h := start(t, newConfig(t, testConfig), st)
		code, body := h.do("POST", "/v1/predict", "", `{"api_key":"read-key","model":"purchase_propensity","features":[
			{"user":{"id":"anon-1"}}, {"user":{"id":612}}]}`)
		if code != 200 {
			t.Fatalf("status %d: %s", code, body)
		}
		got := decodeAnswers(t, body)
		want := demoScore(t, buyer())
		checkUsed(t, "merged", got[0], want)
		checkUsed(t, "canonical", got[1], want)
	}
	t.Run("pebble", func(t *testing.T) {
		st, err := featurestore.OpenPebble(t.TempDir(), featurestore.PebbleOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		f(t, st)
	})
	t.Run("memory", func(t *testing.T) { f(t, newMemStore()) })
}
