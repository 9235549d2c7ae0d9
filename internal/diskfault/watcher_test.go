package diskfault

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestWatcherDeletedDirectory(t *testing.T) {
	f := func(name string, harm func(dir string), want string) {
		t.Helper()
		dir := filepath.Join(t.TempDir(), "data")
		w, err := NewWatcher(dir, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Check(); err != nil {
			t.Fatalf("%s: check before: %v", name, err)
		}
		harm(dir)
		err = w.Check()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: check = %v, want an error with %q", name, err, want)
		}
		if w.Err() != err {
			t.Errorf("%s: Err = %v, want the last check's", name, w.Err())
		}
	}
	f("deleted", func(dir string) { os.RemoveAll(dir) }, "is gone")
	f("deleted and created again", func(dir string) { os.RemoveAll(dir); os.MkdirAll(dir, 0o755) }, "restart Pulse") // the inode may be reused: the marker tells
	f("its files deleted", func(dir string) { os.Remove(filepath.Join(dir, MarkerFile)) }, "lost its marker")
}

// TestWatcherFullDisk fills a small tmpfs: the check fails while it is
// full and passes once space is freed. Mounting needs root.
func TestWatcherFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root; the full disk is also covered by the errorfs tests of featurestore and stream")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("cannot mount a tmpfs as root: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	w, err := NewWatcher(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Check(); err != nil {
		t.Fatalf("check before: %v", err)
	}
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()
	if err := w.Check(); err == nil || !strings.Contains(err.Error(), "takes no writes") {
		t.Fatalf("check on a full disk = %v, want takes no writes", err)
	}
	os.Remove(filler)
	if err := w.Check(); err != nil {
		t.Fatalf("check once space is freed: %v", err)
	}
}
