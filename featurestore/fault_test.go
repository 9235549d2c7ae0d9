package featurestore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"
	"github.com/cockroachdb/pebble/vfs/errorfs"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/diskfault"
)

// fullDisk is a disk that refuses every write while full is set, as a
// full one does (ENOSPC), reads still answering.
type fullDisk struct{ full atomic.Bool }

func (d *fullDisk) MaybeError(op errorfs.Op, path string) error {
	if d.full.Load() && op.OpKind() == errorfs.OpKindWrite {
		return fmt.Errorf("%s %s: %w", "write", path, syscall.ENOSPC)
	}
	return nil
}

// TestPebbleDiskFull: the disk fills while vectors are written. Writes
// fail with a disk fault (before: Pebble's fatal error ended the process
// with os.Exit), reads keep answering, and once space is back the store
// reopens itself and takes writes; at the end, reopened from the disk,
// every vector holds its last written value and the segment count is
// exact: nothing acknowledged is lost, nothing is counted twice.
func TestPebbleDiskFull(t *testing.T) {
	dir := t.TempDir()
	disk := &fullDisk{}
	p, err := openPebble(dir, PebbleOptions{Logger: quiet}, errorfs.Wrap(vfs.Default, disk))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const users = 200
	want := map[string]float64{}
	write := func(round int) error {
		var batch []Update
		for i := range 10 {
			id := fmt.Sprint((round*10 + i) % users)
			u := Update{Vector: Vector{Entity: "user", ID: id, Features: map[string]any{"n": float64(round)}, UpdatedAt: time.Unix(int64(round), 0)}}
			if round%2 == 0 {
				u.Enter = []string{"even"}
			} else {
				u.Exit = []string{"even"}
			}
			batch = append(batch, u)
		}
		if err := p.Write(ctx, batch); err != nil {
			return err
		}
		for _, u := range batch {
			want[u.Vector.ID] = float64(round)
		}
		return nil
	}
	round := 0
	for ; round < 100; round++ {
		if err := write(round); err != nil {
			t.Fatalf("round %d before the disk filled: %v", round, err)
		}
	}
	disk.full.Store(true)
	var faulted error
	for deadline := time.Now().Add(10 * time.Second); faulted == nil; round++ {
		if time.Now().After(deadline) {
			t.Fatal("writes to a full disk kept succeeding for 10 s")
		}
		if err := write(round); err != nil {
			faulted = err
			break
		}
		time.Sleep(5 * time.Millisecond) // lets the WAL's flusher meet the full disk
	}
	if !errors.Is(faulted, diskfault.ErrFault) {
		t.Fatalf("write to a full disk: %v, want an error wrapping diskfault.ErrFault", faulted)
	}
	// The failed round is retried, as the stream retries its batch: it
	// fails while the disk is full.
	for range 3 {
		if err := write(round); err == nil {
			t.Fatal("a write succeeded on a full disk")
		}
	}
	if _, err := p.Get(ctx, "user", "1"); err != nil && !errors.Is(err, diskfault.ErrFault) {
		t.Fatalf("read during the fault: %v", err)
	}
	disk.full.Store(false)
	var err2 error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if err2 = write(round); err2 == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store did not take writes again within 5 s of space coming back: %v", err2)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for round++; round < 300; round++ {
		if err := write(round); err != nil {
			t.Fatalf("round %d after recovery: %v", round, err)
		}
	}
	if err := p.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	q, err := OpenPebble(dir, PebbleOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	members := 0
	for id, n := range want {
		v, err := q.Get(ctx, "user", id)
		if err != nil {
			t.Fatalf("user %s after the fault: %v", id, err)
		}
		if v.Features["n"] != n {
			t.Errorf("user %s: n=%v, want %v (the last acknowledged write)", id, v.Features["n"], n)
		}
		if int(n)%2 == 0 {
			members++
		}
	}
	got, err := q.SegmentCount(ctx, "user", "even")
	if err != nil {
		t.Fatal(err)
	}
	if got != int64(members) {
		t.Errorf("segment count %d, want %d", got, members)
	}
	ids, _, err := q.SegmentMembers(ctx, "user", "even", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != members {
		t.Errorf("%d members listed, want %d", len(ids), members)
	}
}

// TestPebbleSyncedWritesSurviveCrash: a crash that keeps only what was
// synced (vfs.StrictMem's ResetToSyncedState) loses the writes of a store
// opened without Sync, member list changes included, and none of one
// opened with it, as featurestore.Open opens the store the stream writes:
// the stream, after a crash, writes again only its last transaction, and
// a member list does not heal at the entity's next write as a vector does.
func TestPebbleSyncedWritesSurviveCrash(t *testing.T) {
	for _, sync := range []bool{false, true} {
		t.Run(fmt.Sprintf("sync=%v", sync), func(t *testing.T) {
			fs := vfs.NewStrictMem()
			if err := fs.MkdirAll("/store", 0o755); err != nil {
				t.Fatal(err)
			}
			root, err := fs.OpenDir("/")
			if err == nil {
				err = errors.Join(root.Sync(), root.Close())
			}
			if err != nil {
				t.Fatal(err)
			}
			opts := PebbleOptions{Logger: quiet, Sync: sync}
			p, err := openPebble("/store", opts, fs)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			v := Vector{Entity: "user", ID: "u1", Features: map[string]any{"orders": 1.0}, Segments: []string{"buyers"}, UpdatedAt: time.UnixMilli(1)}
			if err := p.Write(ctx, []Update{{Vector: v, Enter: []string{"buyers"}}}); err != nil {
				t.Fatal(err)
			}
			// The crash: nothing after this reaches the disk.
			fs.SetIgnoreSyncs(true)
			p.Close()
			fs.ResetToSyncedState()
			fs.SetIgnoreSyncs(false)
			p, err = openPebble("/store", opts, fs)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			_, err = p.Get(ctx, "user", "u1")
			n, cerr := p.SegmentCount(ctx, "user", "buyers")
			if cerr != nil {
				t.Fatal(cerr)
			}
			kept := err == nil && n == 1
			if kept != sync {
				t.Fatalf("after the crash: vector %v, buyers count %d; want the write kept: %v", err, n, sync)
			}
		})
	}
}

// Open, the store the stream writes, syncs every write.
func TestOpenSyncsPebble(t *testing.T) {
	cfg := &config.Config{Store: config.Store{Backend: "pebble", Path: t.TempDir()}}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if p, ok := s.(*Pebble); !ok || !p.opts.Sync {
		t.Fatalf("Open gave %T, synced: %v; want a synced *Pebble", s, ok && p.opts.Sync)
	}
}
