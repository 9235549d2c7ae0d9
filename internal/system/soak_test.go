package system

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/loadtest"
)

// TestSoakStaysFlat is `pulse loadtest soak` for 20 s: ingest, predictions
// and live-feed clients coming and going through every service of
// `pulse dev` in this process, with no request failing and the process's
// goroutines, open files and live heap flat between the first and last
// thirds of the run (a leak per request or per SSE client grows with
// them). Over 20 s the embedded Kafka's log, which kfake keeps in memory,
// stays within the heap's slack.
func TestSoakStaysFlat(t *testing.T) {
	cfg, err := Example(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sys, _, err := EndToEnd(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	var out strings.Builder
	rep, err := loadtest.Soak(ctx, loadtest.SoakOptions{
		IngestURL: sys.IngestURL(), ScorerURL: sys.ScorerURL(),
		WriteKey: cfg.KeyWithScope(config.ScopeWrite), ReadKey: cfg.KeyWithScope(config.ScopeRead),
		Model: "purchase_propensity", Duration: 20 * time.Second,
		EventsPerSecond: 300, PredictsPerSecond: 100, SSEClients: 10, Out: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events, %d predictions, %d live-feed sessions\n%s", rep.Events, rep.Predictions, rep.SSESessions, out.String())
	if rep.FirstErr != nil {
		t.Fatalf("%d requests failed, the first: %v", rep.Errors, rep.FirstErr)
	}
	if rep.Events == 0 || rep.Predictions == 0 || rep.SSESessions < 50 {
		t.Fatalf("the load did not run: %d events, %d predictions, %d live-feed sessions", rep.Events, rep.Predictions, rep.SSESessions)
	}
	if err := loadtest.Flat(rep.Samples, 50, true); err != nil {
		t.Error(err)
	}
}
