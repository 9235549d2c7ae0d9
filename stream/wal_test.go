package stream

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble"
)

// The state's WAL files take disk in proportion to the memtable (Pebble
// preallocates each at 110% of it): pulse dev's 4 MiB keeps a partition's
// WAL near 4.4 MiB a file, where the default 32 MiB takes 35 MiB a file.
func TestWALFollowsMemTable(t *testing.T) {
	for _, c := range []struct {
		memTable int
		max      int64
	}{{4 << 20, 5 << 20}, {32 << 20, 40 << 20}} {
		dir := t.TempDir()
		db, _, err := openPebble(dir, nil, nil, c.memTable)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 64 {
			if err := db.Set([]byte{byte(i)}, make([]byte, 16<<10), pebble.Sync); err != nil {
				t.Fatal(err)
			}
		}
		logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		if len(logs) == 0 {
			t.Fatal("no WAL file")
		}
		for _, l := range logs {
			fi, err := os.Stat(l)
			if err != nil {
				t.Fatal(err)
			}
			used := fi.Sys().(*syscall.Stat_t).Blocks * 512
			if used > c.max || (c.memTable == 32<<20 && used < 30<<20) {
				t.Errorf("memtable %d MiB: WAL %s takes %d bytes of disk, want at most %d (and the 32 MiB one preallocated)", c.memTable>>20, filepath.Base(l), used, c.max)
			}
		}
		db.Close()
	}
}
