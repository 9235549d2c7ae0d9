package loadtest

import (
	"reflect"
	"testing"
	"time"
)

// TestEnsureDefaults: a zero Options of each kind gets the defaults its
// fields' comments state, and a field already set is kept.
func TestEnsureDefaults(t *testing.T) {
	f := func(got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
		}
	}
	var o Options
	o.EnsureDefaults()
	f(o, Options{MaxInFlight: 10_000})

	var in IngestOptions
	in.EnsureDefaults()
	f(in, IngestOptions{BaselineTopic: "pulse.loadtest", Batch: 100, Duration: 10 * time.Second, Users: 100_000, Connections: 32, Rounds: 3})

	var p PredictOptions
	p.EnsureDefaults()
	f(p, PredictOptions{Model: "purchase_propensity", Entity: "user", Users: 100_000, Rates: []float64{2000, 5000, 10000},
		Duration: 10 * time.Second, Warmup: time.Second, Connections: 32, Rounds: 1})

	var fr FreshnessOptions
	fr.EnsureDefaults()
	f(fr, FreshnessOptions{Rate: 10_000, Batch: 100, Duration: 10 * time.Second, Warmup: 2 * time.Second, Users: 100_000,
		Poll: time.Millisecond, Timeout: 10 * time.Second})

	var s SegmentsOptions
	s.EnsureDefaults()
	f(s, SegmentsOptions{Rate: 5_000, Batch: 50, Duration: 10 * time.Second, Warmup: 2 * time.Second, Users: 100_000, Linger: 5 * time.Second})

	kept := SegmentsOptions{Rate: 7, Linger: time.Minute}
	kept.EnsureDefaults()
	if kept.Rate != 7 || kept.Linger != time.Minute {
		t.Errorf("set fields changed: %+v", kept)
	}
}
