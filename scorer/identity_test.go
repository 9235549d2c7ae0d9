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
