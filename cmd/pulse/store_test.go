package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// `pulse store repair` on a real Redis whose member lists lost a write:
// the dry run says what it would do and changes nothing, the repair puts
// the list right, for the config's entity types; a Pebble store is
// refused with the reason.
func TestStoreRepairCommand(t *testing.T) {
	bin := testenv.BuildPulse(t)
	addr := testenv.Redis(t)
	prefix := testenv.RedisKeyPrefix(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "pulse.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`store: {backend: redis}
redis: {addr: %q, key_prefix: %q}
features: [{name: orders_7d, agg: count, event: Order Completed, window: 7d}]
segments: [{name: buyers, rule: "orders_7d > 0"}]
`, addr, prefix)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := featurestore.OpenRedis(config.Redis{Addr: addr, KeyPrefix: prefix}, featurestore.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// u1's vector names buyers, but its entering was lost.
	if err := st.Write(ctx, []featurestore.Update{{Vector: featurestore.Vector{Entity: "user", ID: "u1", Segments: []string{"buyers"}}}}); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string) { return runBin(t, bin, "", args...) }
	members := func() []string {
		ids, _, err := st.SegmentMembers(ctx, "user", "buyers", "", 10)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if code, out := run("store", "repair", "-config", conf, "-dry-run"); code != 0 || !strings.Contains(out, "user: 1 vectors, 0 member lists of 0 members: would add 1, would remove 0") {
		t.Fatalf("dry run: exit %d, output:\n%s", code, out)
	}
	if ids := members(); len(ids) != 0 {
		t.Fatalf("the dry run changed the list: %q", ids)
	}
	if code, out := run("store", "repair", "-config", conf); code != 0 || !strings.Contains(out, "user: 1 vectors, 1 member lists of 1 members: added 1, removed 0") {
		t.Fatalf("repair: exit %d, output:\n%s", code, out)
	}
	if ids := members(); !slices.Equal(ids, []string{"u1"}) {
		t.Fatalf("after the repair buyers holds %q, want u1", ids)
	}

	pebbleConf := filepath.Join(dir, "pebble.yaml")
	if err := os.WriteFile(pebbleConf, []byte("store: {backend: pebble, path: "+filepath.Join(dir, "store")+"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := run("store", "repair", "-config", pebbleConf); code != 1 || !strings.Contains(out, `store.backend is "pebble": only the Redis store`) {
		t.Errorf("a Pebble store: exit %d, output:\n%s", code, out)
	}
}
