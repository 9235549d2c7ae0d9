// Package diskfault is what Pulse does when the disk under its data
// directory fails: full, read-only, or the directory deleted while running.
//
// Two parts. Pebble (the stream's state, the embedded online store) calls
// its logger's Fatalf on a write it cannot recover from (a WAL or MANIFEST
// write that failed), and its default is to end the process; Watch gives a
// Pebble database a logger and event listener that record the fault on a
// Fault instead, so the owner closes the database and opens it again (the
// WAL replays what was written) once the disk takes writes again. And a
// Watcher checks the data directory itself every second (the directory is
// still the one Pulse created, its marker file is there, a small file can
// be written and synced), so that ingest answers 503 instead of
// acknowledging events it cannot keep, and readiness fails, saying why.
//
// Metrics: pulse_disk_faults_total{store} counts the faults Pebble
// reported, pulse_data_dir_ok is 1 while the data directory passes its
// check.
package diskfault

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	dto "github.com/prometheus/client_model/go"
)

// ErrFault wraps every fault a Fault records.
var ErrFault = errors.New("the disk refused a write")

var faults = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "pulse_disk_faults_total",
	Help: "Write faults Pebble reported (a WAL, MANIFEST, flush or compaction write that failed), by store; the store is reopened once the disk takes writes again.",
}, []string{"store"})

// Fault is one Pebble database's first write fault. Safe for concurrent use.
type Fault struct {
	store  string
	log    *slog.Logger
	err    atomic.Pointer[error]
	wedged atomic.Bool
}

// Watch sets o's logger, wraps its file system (nil: the disk) and adds
// an event listener, so that Pebble's fatal errors, every write its files
// refuse and its background (flush, compaction) errors are recorded on the
// returned Fault, and logged once, instead of ending the process. store
// names the database in the log and the metric. Pebble's informational
// messages go to log at Debug.
//
// A Pebble commit whose WAL write failed returns no error once Fatalf
// returns: check Err after every commit (Commit does), and throw the
// database away once it reports a fault.
func Watch(o *pebble.Options, log *slog.Logger, store string) *Fault {
	if log == nil {
		log = slog.Default()
	}
	f := &Fault{store: store, log: log.With("store", store)}
	faults.WithLabelValues(store) // the series exists at 0 before any fault
	if o.FS == nil {
		o.FS = vfs.Default
	}
	o.FS = faultFS{FS: o.FS, f: f}
	o.Logger = logger{f}
	o.AddEventListener(pebble.EventListener{BackgroundError: func(err error) {
		if errors.Is(err, pebble.ErrCancelledCompaction) || errors.Is(err, pebble.ErrClosed) {
			return // retried by Pebble, or the database is closing
		}
		// A flush or compaction that cannot write stalls the writes
		// behind it, for as long as the disk is full: fail them instead.
		f.set(fmt.Sprintf("background error: %v", err))
	}})
	return f
}

// Err is nil while the database has had no fault, else the first fault,
// wrapping ErrFault.
func (f *Fault) Err() error {
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (f *Fault) set(msg string) {
	faults.WithLabelValues(f.store).Inc()
	err := fmt.Errorf("%w: %s: %s", ErrFault, f.store, msg)
	if f.err.CompareAndSwap(nil, &err) {
		f.log.Error("disk fault: the database stops taking writes until it is reopened", "err", msg)
	}
}

// Commit commits b with opts unless the database had a fault, and
// reports a fault the commit hit (which Pebble does not return once
// Fatalf has returned). Commits to one database must not run
// concurrently: a fault recorded while one is in flight could let
// another reach Pebble's panic.
func (f *Fault) Commit(b *pebble.Batch, opts *pebble.WriteOptions) (err error) {
	if err := f.Err(); err != nil {
		return err
	}
	defer func() {
		// A last resort: a WAL error Pebble panics on. The commit
		// pipeline may be left locked; the owner must not close the
		// database (Wedged), and the process must restart to reopen it.
		if r := recover(); r != nil {
			f.wedged.Store(true)
			f.set(fmt.Sprintf("commit panicked: %v", r))
			err = f.Err()
		}
	}()
	if err := b.Commit(opts); err != nil {
		f.set(err.Error())
		return f.Err()
	}
	return f.Err()
}

// Do runs a write other than a batch commit (a DeleteRange) as Commit
// runs a commit: refused after a fault, a panic inside Pebble recovered,
// a fault it hit reported.
func (f *Fault) Do(write func() error) (err error) {
	if err := f.Err(); err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			f.wedged.Store(true)
			f.set(fmt.Sprintf("write panicked: %v", r))
			err = f.Err()
		}
	}()
	if err := write(); err != nil {
		f.set(err.Error())
		return f.Err()
	}
	return f.Err()
}

// Wedged reports that a commit panicked inside Pebble: the database may
// hold its commit lock, so closing it could block forever.
func (f *Fault) Wedged() bool { return f.wedged.Load() }

// logger is Pebble's logger: Fatalf records the fault rather than exit.
type logger struct{ f *Fault }

func (l logger) Infof(format string, args ...any) {
	l.f.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (l logger) Errorf(format string, args ...any) {
	l.f.log.Error("pebble: " + fmt.Sprintf(format, args...))
}

func (l logger) Fatalf(format string, args ...any) {
	l.f.set(fmt.Sprintf(format, args...))
}

// Faults is how many faults the databases named store reported since the
// process started (pulse_disk_faults_total{store}).
func Faults(store string) float64 {
	var m dto.Metric
	if err := faults.WithLabelValues(store).Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
