package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/internal/testenv"
)

// TestBackfillClickHouseDown: with the history's clickhouse-server
// stopped, a backfill fails at once with an error that names ClickHouse
// and its address and says what to do, instead of a driver error from
// deep in its first query.
func TestBackfillClickHouseDown(t *testing.T) {
	srv := testenv.StartClickHouse(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "pulse.yaml")
	yaml := fmt.Sprintf("clickhouse: {addr: %q}\nfeatures:\n  - {name: orders_7d, agg: count, event: Order Completed, window: 7d}\n", srv.Addr())
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(what string) {
		t.Helper()
		start := time.Now()
		err := runBackfill(context.Background(), []string{"verify", "-config", cfgPath})
		if err == nil || !strings.Contains(err.Error(), "ClickHouse at "+srv.Addr()+" does not answer") {
			t.Errorf("%s: backfill verify: %v, want the ClickHouse named", what, err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s: the backfill took %s to fail", what, took)
		}
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	run("stopped")
}
