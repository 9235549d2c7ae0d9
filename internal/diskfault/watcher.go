package diskfault

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// MarkerFile is the file NewWatcher writes in the data directory; the
// Watcher checks it is still there with what it wrote.
const MarkerFile = ".pulse-data-dir"

// probeFile is rewritten (as a new file, renamed over the last one) at
// each check, so a full disk fails the check: rewriting a file in place
// could reuse its own blocks.
const probeFile = ".pulse-probe"

var dirOK = promauto.NewGauge(prometheus.GaugeOpts{
	Name: "pulse_data_dir_ok",
	Help: "1 while the data directory passes its check (still the one Pulse opened, its marker there, a file can be written and synced); 0 while ingest refuses events because of it.",
})

// Watcher checks the data directory. Create it with NewWatcher when the
// process starts, then Run it; Err says whether the directory can keep
// what the process acknowledges. Safe for concurrent use.
type Watcher struct {
	dir   string
	ino   uint64
	token string
	log   *slog.Logger
	err   atomic.Pointer[error]
}

// NewWatcher creates dir if needed, writes its marker and records which
// directory it is (its device and inode), so that a directory deleted and
// created again reads as deleted.
func NewWatcher(dir string, log *slog.Logger) (*Watcher, error) {
	if log == nil {
		log = slog.Default()
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("cannot watch data directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("cannot watch data directory: %w", err)
	}
	var b [8]byte
	rand.Read(b[:])
	w := &Watcher{dir: abs, token: hex.EncodeToString(b[:]), log: log.With("data_dir", abs)}
	if err := os.WriteFile(filepath.Join(abs, MarkerFile), []byte(w.token+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("cannot watch data directory: %w", err)
	}
	if w.ino, err = inode(abs); err != nil {
		return nil, fmt.Errorf("cannot watch data directory: %w", err)
	}
	var none error
	w.err.Store(&none)
	dirOK.Set(1)
	return w, nil
}

// Dir is the directory watched, absolute.
func (w *Watcher) Dir() string { return w.dir }

// Err is nil while the last check passed, else why it failed.
func (w *Watcher) Err() error { return *w.err.Load() }

// Run checks the directory every interval (default 1 s) until ctx ends,
// logging each change of state.
func (w *Watcher) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.Check()
	}
}

// Check checks the directory now, records and returns the result.
func (w *Watcher) Check() error {
	err := w.check()
	was := w.Err()
	w.err.Store(&err)
	switch {
	case err != nil && was == nil:
		dirOK.Set(0)
		w.log.Error("data directory failed its check: ingest answers 503 and readiness fails until it passes again", "err", err)
	case err == nil && was != nil:
		dirOK.Set(1)
		w.log.Info("data directory passes its check again", "was", was)
	}
	return err
}

func (w *Watcher) check() error {
	ino, err := inode(w.dir)
	if err != nil {
		return fmt.Errorf("data directory %s is gone: %w", w.dir, err)
	}
	if ino != w.ino {
		return fmt.Errorf("data directory %s was deleted and created again: what was written before is gone; restart Pulse", w.dir)
	}
	b, err := os.ReadFile(filepath.Join(w.dir, MarkerFile))
	if err != nil || string(b) != w.token+"\n" {
		return fmt.Errorf("data directory %s lost its marker %s (files deleted under Pulse?): restart Pulse", w.dir, MarkerFile)
	}
	if err := w.probe(); err != nil {
		return fmt.Errorf("data directory %s takes no writes (disk full or read-only?): %w", w.dir, err)
	}
	return nil
}

// probe writes and syncs a new small file, then renames it over the last.
func (w *Watcher) probe() error {
	tmp := filepath.Join(w.dir, probeFile+".new")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(make([]byte, 4096))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, filepath.Join(w.dir, probeFile))
}

// errNoInode is returned where the platform has no inode numbers.
var errNoInode = errors.New("no inode number on this platform")
