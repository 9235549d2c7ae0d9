package loadtest

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// StartCPUProfile writes a CPU profile of this process to file until stop
// is called (every load test's -cpuprofile), and beside it, in
// file+".mutex", where goroutines waited for locks held by others
// (pprof's mutex profile, one contention event in 10 sampled); with an
// empty file it does nothing.
func StartCPUProfile(file string) (stop func(), err error) {
	if file == "" {
		return func() {}, nil
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	prev := runtime.SetMutexProfileFraction(10)
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		if m, err := os.Create(file + ".mutex"); err == nil {
			pprof.Lookup("mutex").WriteTo(m, 0)
			m.Close()
		}
		runtime.SetMutexProfileFraction(prev)
	}, nil
}

// StartTrace writes an execution trace of this process to file until stop
// is called (the load tests' -trace): where the slow requests' time went,
// by `go tool trace -pprof=sched|net|sync FILE` (waiting for a CPU, for
// the network, for a lock or channel). With an empty file it does
// nothing.
func StartTrace(file string) (stop func(), err error) {
	if file == "" {
		return func() {}, nil
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := trace.Start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		trace.Stop()
		f.Close()
	}, nil
}

// PrintStreamStats prints the in-process stream's own timings of the run
// (its histograms in this process's Prometheus registry), to tell where
// the end-to-end time went.
func PrintStreamStats(w io.Writer) { PrintStreamStatsSince(w, nil) }

// StreamStats is a snapshot of this process's stream metrics, to print
// one phase of a run alone (PrintStreamStatsSince).
type StreamStats map[string]*dto.Metric

// SnapStreamStats takes a snapshot of the stream's metrics now.
func SnapStreamStats() StreamStats {
	mfs, _ := prometheus.DefaultGatherer.Gather()
	out := StreamStats{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[metricKey(mf.GetName(), m)] = m
		}
	}
	return out
}

func metricKey(name string, m *dto.Metric) string {
	for _, l := range m.GetLabel() {
		name += "{" + l.GetName() + "=" + l.GetValue() + "}"
	}
	return name
}

// PrintStreamStatsSince prints what PrintStreamStats does, counting only
// what was observed after the snapshot before (all of it when nil): a
// phase's figures apart from a backlog's before it.
func PrintStreamStatsSince(w io.Writer, before StreamStats) {
	mfs, _ := prometheus.DefaultGatherer.Gather()
	for _, mf := range mfs {
		switch mf.GetName() {
		case "pulse_stream_batch_seconds", "pulse_stream_txn_seconds", "pulse_stream_event_to_store_seconds", "pulse_stream_batch_records",
			"pulse_stream_state_commit_seconds", "pulse_stream_store_write_seconds":
		case "pulse_stream_txn_records_total":
			for _, m := range mf.GetMetric() {
				v := m.GetCounter().GetValue() - before[metricKey(mf.GetName(), m)].GetCounter().GetValue()
				fmt.Fprintf(w, "%-40s %-24s %.0f\n", mf.GetName(), m.GetLabel()[0].GetValue(), v)
			}
			continue
		case "pulse_stream_timer_fires_total", "pulse_stream_rfm_rescored_total", "pulse_stream_segment_changes_total":
			// Counters: the work besides the events' own.
			var n float64
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue() - before[metricKey(mf.GetName(), m)].GetCounter().GetValue()
			}
			fmt.Fprintf(w, "%-40s %.0f\n", mf.GetName(), n)
			continue
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			name := metricKey(mf.GetName(), m)
			h, h0 := m.GetHistogram(), before[name].GetHistogram()
			n := h.GetSampleCount() - h0.GetSampleCount()
			if n == 0 {
				continue
			}
			b0 := h0.GetBucket()
			// The smallest bucket bounds holding 99% and all of the
			// samples (a stall shows in the second).
			p99, top := math.Inf(1), math.Inf(1)
			for i, b := range h.GetBucket() {
				c := b.GetCumulativeCount()
				if i < len(b0) {
					c -= b0[i].GetCumulativeCount()
				}
				if float64(c) >= 0.99*float64(n) && math.IsInf(p99, 1) {
					p99 = b.GetUpperBound()
				}
				if c == n {
					top = b.GetUpperBound()
					break
				}
			}
			fmt.Fprintf(w, "%-40s n %8d mean %10.4f p99 <= %g max <= %g\n", name, n, (h.GetSampleSum()-h0.GetSampleSum())/float64(n), p99, top)
		}
	}
}

// PrintLoad prints the machine's load average (Linux), to read a run's
// figures against what else was running.
func PrintLoad(w io.Writer) {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(w, "load average: %s", b)
	}
}
