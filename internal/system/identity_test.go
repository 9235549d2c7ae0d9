package system

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/loadtest"
)

// TestLoadtestIdentityMerges runs `pulse loadtest identity` briefly through
// every service of `pulse dev`: each probe's anonymous event, then its
// identify, ends as one person the scorer answers for the anonymous id,
// with the anonymous event counted; none fails.
func TestLoadtestIdentityMerges(t *testing.T) {
	ctx := context.Background()
	cfg, err := Example(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sys, _, err := EndToEnd(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	rep, err := loadtest.Identity(ctx, loadtest.IdentityOptions{
		URL: sys.IngestURL(), WriteKey: sys.Config.KeyWithScope(config.ScopeWrite),
		ScorerURL: sys.ScorerURL(), ReadKey: sys.Config.KeyWithScope(config.ScopeRead),
		Rate: 200, Batch: 20, Merges: 5, Duration: 2 * time.Second, Warmup: 500 * time.Millisecond, Users: 1000,
		Poll: 5 * time.Millisecond, Timeout: 20 * time.Second,
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.Merged.TotalCount() == 0 || rep.Merged.TotalCount() != rep.Probes || rep.Served.TotalCount() != rep.Probes {
		t.Fatalf("%d probes, %d served, %d merged, %d failed: %v", rep.Probes, rep.Served.TotalCount(), rep.Merged.TotalCount(), rep.Failed, rep.FirstErr)
	}
	t.Logf("%d merges, identify 200 -> merged p50 %v max %v", rep.Probes,
		time.Duration(rep.Merged.ValueAtQuantile(50))*time.Microsecond, time.Duration(rep.Merged.Max())*time.Microsecond)
}
