package stream

import (
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"
	"github.com/cockroachdb/pebble/vfs/errorfs"
	"github.com/pulse-rt/pulse/internal/diskfault"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// fullDisk refuses every write (ENOSPC) while full is set, reads still
// answering: a full disk, for the tasks' Pebble databases.
type fullDisk struct{ full atomic.Bool }

func (d *fullDisk) MaybeError(op errorfs.Op, path string) error {
	if d.full.Load() && op.OpKind() == errorfs.OpKindWrite {
		return fmt.Errorf("write %s: %w", path, syscall.ENOSPC)
	}
	return nil
}

// TestDiskFullStream: the disk under the stream's state fills during a
// load on a real broker. The processor keeps running (before: Pebble's
// fatal error was a panic that ended the process, ingest and the scorer
// with it), stops advancing while the disk refuses writes, and once space
// is back it reopens its tasks from their state and the changelog and
// catches up on its own: the features equal the reference and every
// segment change is on the topic once.
func TestDiskFullStream(t *testing.T) {
	e := newEnv(t, testenv.Kafka(t))
	disk := &fullDisk{}
	p := e.processor(Options{fs: errorfs.Wrap(vfs.Default, disk)}, "")
	stop := e.run(p)
	ref := newReference(t, e.cfg)
	recs := loadInto(ref, 11, 40, 3000)
	third := len(recs) / 3
	e.produce(recs[:third]...)
	e.waitCaughtUp(30*time.Second, p)

	faults := diskfault.Faults("stream")
	disk.full.Store(true)
	// Batch after batch, so that the tasks' commits meet the full disk
	// (the WAL is written behind a commit: the next commit hears of it).
	for i := third; i < 2*third; i += 50 {
		e.produce(recs[i:min(i+50, 2*third)]...)
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(10 * time.Second)
	for diskfault.Faults("stream") == faults {
		if time.Now().After(deadline) {
			t.Fatal("no task met the full disk in 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The failed tasks try to reopen on the full disk: not ready, saying why.
	testenv.WaitFor(t, 10*time.Second, "the stream not ready on the full disk", func() bool {
		err := p.Ready()
		return err != nil && strings.Contains(err.Error(), "no space left")
	})
	if err := p.fatal.Load(); err != nil {
		t.Fatalf("the processor stopped: %v", *err)
	}
	disk.full.Store(false)
	e.produce(recs[2*third:]...)
	e.waitCaughtUp(60*time.Second, p)
	if err := p.Ready(); err != nil {
		t.Errorf("not ready after the disk took writes again: %v", err)
	}
	ref.waitMatches(t, e.store, e.clock.now(), 10*time.Second)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	final := segmentChanges(t, e)
	now := e.clock.now()
	for id := range ref.st {
		_, want := ref.vector(id, now)
		if !equal(final[id], want...) {
			t.Errorf("user %s: segments from the topic %v, want %v", id, final[id], want)
		}
	}
}
