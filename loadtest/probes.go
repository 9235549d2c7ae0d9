package loadtest

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
)

// probeConfig adds to the measured config what the probes of `loadtest
// freshness` and `loadtest segments` need: a count of probe events (a new
// user has a vector once its probe is processed, and enters ProbeEnter),
// and a 2s-window count whose segment (ProbeExpire) the user leaves when
// the window slides past the probe.
const probeConfig = `
features:
  - name: loadtest_probes
    agg: count
    event: ` + ProbeEvent + `
  - name: loadtest_probes_2s
    agg: count
    event: ` + ProbeEvent + `
    window: 2s
segments:
  - name: ` + ProbeEnter + `
    rule: loadtest_probes >= 1
  - name: ` + ProbeExpire + `
    rule: loadtest_probes_2s >= 1
`

// The segments AddProbes adds: SegmentsOptions.Enter and Expire.
const (
	ProbeEnter  = "loadtest_probed"
	ProbeExpire = "loadtest_probed_2s"
)

// AddProbes adds the probe features and segments to cfg, and drops the
// segments' webhooks: a load test has no receivers.
func AddProbes(cfg *config.Config) error {
	probe, err := config.Parse([]byte(probeConfig), "loadtest probes")
	if err != nil {
		return err
	}
	cfg.Features = append(cfg.Features, probe.Features...)
	cfg.Segments = append(cfg.Segments, probe.Segments...)
	for i := range cfg.Segments {
		cfg.Segments[i].Webhook = nil
	}
	return nil
}

// WriteWatch is the stream's store in the end-to-end load tests, noting
// when each probe user's first vector was written: once Write returns, a
// Get serves it (FreshnessOptions.WrittenAt).
type WriteWatch struct {
	featurestore.Store
	mu      sync.Mutex // guards written
	written map[string]time.Time
}

// NewWriteWatch watches the writes to store.
func NewWriteWatch(store featurestore.Store) *WriteWatch {
	return &WriteWatch{Store: store, written: map[string]time.Time{}}
}

// Write writes through and notes the time of each probe user's first vector.
func (w *WriteWatch) Write(ctx context.Context, batch []featurestore.Update) error {
	err := w.Store.Write(ctx, batch)
	if err != nil {
		return err
	}
	now := time.Now()
	for i := range batch {
		if id := batch[i].Vector.ID; strings.HasPrefix(id, "probe-") {
			w.mu.Lock()
			if _, ok := w.written[id]; !ok {
				w.written[id] = now
			}
			w.mu.Unlock()
		}
	}
	return nil
}

// WrittenAt is when the first vector of user (a probe) was written.
func (w *WriteWatch) WrittenAt(user string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.written[user]
	return t, ok
}
