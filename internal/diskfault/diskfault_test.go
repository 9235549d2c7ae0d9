package diskfault

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
	"github.com/cockroachdb/pebble/vfs/errorfs"
)

// TestWatchRecordsTheFault: a Pebble database on a disk that starts
// refusing every write. Unsynced commits go on in memory until a synced
// one meets the error; from then on Commit refuses, nothing panics or
// exits, and the database can be closed and opened again once the disk
// takes writes.
func TestWatchRecordsTheFault(t *testing.T) {
	var full atomic.Bool
	fs := errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op, path string) error {
		if full.Load() && op.OpKind() == errorfs.OpKindWrite {
			return fmt.Errorf("write %s: %w", path, syscall.ENOSPC)
		}
		return nil
	}))
	dir := t.TempDir()
	open := func() (*pebble.DB, *Fault) {
		o := &pebble.Options{FS: fs}
		f := Watch(o, quiet, "test")
		db, err := pebble.Open(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		return db, f
	}
	db, f := open()
	commit := func(i int, wo *pebble.WriteOptions) error {
		b := db.NewBatch()
		defer b.Close()
		b.Set(fmt.Appendf(nil, "k%06d", i), make([]byte, 1000), nil)
		return f.Commit(b, wo)
	}
	for i := range 100 {
		if err := commit(i, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := commit(100, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	full.Store(true)
	var err error
	for i := 101; err == nil && i < 10000; i++ {
		wo := pebble.NoSync
		if i%50 == 0 {
			wo = pebble.Sync
		}
		err = commit(i, wo)
	}
	if !errors.Is(err, ErrFault) || !errors.Is(f.Err(), ErrFault) {
		t.Fatalf("commits on a full disk: %v, fault %v; want ErrFault", err, f.Err())
	}
	if err := commit(20000, pebble.NoSync); !errors.Is(err, ErrFault) {
		t.Fatalf("a commit after the fault: %v, want it refused", err)
	}
	if f.Wedged() {
		t.Fatal("wedged: the fault reached Pebble's panic")
	}
	if Faults("test") == 0 {
		t.Error("pulse_disk_faults_total{store=test} did not count it")
	}
	db.Close()
	full.Store(false)
	db, f = open()
	defer db.Close()
	if _, closer, err := db.Get([]byte("k000100")); err != nil {
		t.Fatalf("the synced write after reopening: %v", err)
	} else {
		closer.Close()
	}
	if err := commit(30000, pebble.Sync); err != nil {
		t.Fatalf("a commit after reopening: %v", err)
	}
}
