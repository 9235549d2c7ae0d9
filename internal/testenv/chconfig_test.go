package testenv_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/pulse-rt/pulse/internal/testenv"
)

// The local ClickHouse (chserver's config, as pulse dev runs it) deletes
// parts merged away after a minute, so a dev's small inserts do not pile
// up on disk for the default 8 minutes.
func TestClickHouseOldPartsLifetime(t *testing.T) {
	_, httpAddr := testenv.ClickHouse(t)
	resp, err := http.Post("http://"+httpAddr+"/", "text/plain", strings.NewReader("SELECT value FROM system.merge_tree_settings WHERE name = 'old_parts_lifetime'"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if got := strings.TrimSpace(string(b)); got != "60" {
		t.Fatalf("old_parts_lifetime = %q, want 60", got)
	}
}
