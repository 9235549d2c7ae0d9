package loadtest

import (
	"flag"
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

// TestFlags: a command's flags default to what EnsureDefaults gives, and
// set the fields they name.
func TestFlags(t *testing.T) {
	fl := flag.NewFlagSet("predict", flag.ContinueOnError)
	var p PredictOptions
	p.Flags(fl)
	if err := fl.Parse([]string{"-rates", "100, 250", "-users", "7"}); err != nil {
		t.Fatal(err)
	}
	want := PredictOptions{URL: "http://127.0.0.1:8081", Key: "dev-read-key", Users: 7, Rates: []float64{100, 250}}
	want.EnsureDefaults()
	if !reflect.DeepEqual(p, want) {
		t.Errorf("predict flags:\n got %+v\nwant %+v", p, want)
	}
	if err := fl.Parse([]string{"-rates", "100,x"}); err == nil {
		t.Error("-rates 100,x: no error")
	}

	fl = flag.NewFlagSet("segments", flag.ContinueOnError)
	var s SegmentsOptions
	s.Flags(fl)
	if err := fl.Parse([]string{"-batch", "9"}); err != nil {
		t.Fatal(err)
	}
	ws := SegmentsOptions{Batch: 9}
	ws.EnsureDefaults()
	if !reflect.DeepEqual(s, ws) {
		t.Errorf("segments flags:\n got %+v\nwant %+v", s, ws)
	}
}
