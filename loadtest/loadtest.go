// Package loadtest is Pulse's load generator: open-loop load at a fixed
// rate (each request is sent on schedule whether or not earlier answers
// came back, so a slow server cannot slow the generator and hide its own
// latency) with latencies recorded in HDR histograms from each request's
// scheduled time. `pulse loadtest ingest` and `pulse loadtest predict` are
// built on it, each with a baseline measured in the same run; their open
// loops go through HTTPClient, whose scheduler writes each request as it
// wakes instead of handing it to a sender (see HTTPClient for what that
// hand-off cost).
package loadtest

import (
	"context"
	"fmt"
	"io"
	"iter"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what one run measured.
type Result struct {
	Name     string
	Rate     float64       // target requests/s (0 = closed loop)
	Duration time.Duration // wall time from first send to last answer
	Sent     int64
	OK       int64
	Errors   int64
	Dropped  int64 // sends skipped because MaxInFlight was reached
	Items    int64 // items carried by successful requests (events per batch...)
	Hist     *hdrhistogram.Histogram
	FirstErr error
}

func newHist() *hdrhistogram.Histogram {
	// 1 µs to 60 s, 3 significant digits.
	return hdrhistogram.New(1, 60_000_000, 3)
}

// Quantile returns a latency quantile (0-100).
func (r *Result) Quantile(q float64) time.Duration {
	return time.Duration(r.Hist.ValueAtQuantile(q)) * time.Microsecond
}

// Throughput is successful requests per second.
func (r *Result) Throughput() float64 { return float64(r.OK) / r.Duration.Seconds() }

// ItemRate is items per second carried by successful requests.
func (r *Result) ItemRate() float64 { return float64(r.Items) / r.Duration.Seconds() }

// String is one line for humans.
func (r *Result) String() string {
	rate := "closed loop"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%.0f req/s", r.Rate)
	}
	s := fmt.Sprintf("%-28s %-12s sent %7d ok %7d err %5d  %9.0f req/s", r.Name, rate, r.Sent, r.OK, r.Errors, r.Throughput())
	if r.Items > r.OK {
		s += fmt.Sprintf(" %9.0f items/s", r.ItemRate())
	}
	s += fmt.Sprintf("  p50 %8s p99 %8s p99.9 %8s max %8s", fmtDur(r.Quantile(50)), fmtDur(r.Quantile(99)), fmtDur(r.Quantile(99.9)), fmtDur(time.Duration(r.Hist.Max())*time.Microsecond))
	if r.Dropped > 0 {
		s += fmt.Sprintf(" dropped %d", r.Dropped)
	}
	return s
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// Request performs one request; items is how many items it carried when
// it succeeded (1 for a single call).
type Request func(ctx context.Context, seq int64) (items int, err error)

// Options shape a run.
type Options struct {
	Name     string
	Rate     float64       // requests per second; must be > 0 for OpenLoop
	Duration time.Duration // how long to send
	Warmup   time.Duration // sent but not recorded
	// MaxInFlight bounds concurrent requests (default 10,000); a send due
	// while at the bound is counted as dropped, never delayed.
	MaxInFlight int
}

// EnsureDefaults sets MaxInFlight, when zero, to its default.
func (o *Options) EnsureDefaults() {
	if o.MaxInFlight == 0 {
		o.MaxInFlight = 10_000
	}
}

// OpenLoop sends at opts.Rate for opts.Duration and records each latency
// from the request's scheduled send time (no coordinated omission).
func OpenLoop(ctx context.Context, opts Options, do Request) *Result {
	opts.EnsureDefaults()
	res := &Result{Name: opts.Name, Rate: opts.Rate, Hist: newHist()}
	type send struct {
		seq    int64
		due    time.Time
		record bool
	}
	// A pool of senders fed by the scheduler: a goroutine per request
	// would allocate and schedule at the very moments being measured. A
	// send waits in the queue when every sender is busy, and its latency
	// still counts from its due time.
	senders := min(opts.MaxInFlight, maxOut)
	queue := make(chan send, opts.MaxInFlight)
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr atomic.Pointer[error]
	)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := newHist()
			var ok, failed, items int64
			for s := range queue {
				n, err := do(ctx, s.seq)
				lat := time.Since(s.due)
				if !s.record {
					continue
				}
				if err != nil {
					failed++
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				ok++
				items += int64(n)
				_ = h.RecordValue(max(1, lat.Microseconds()))
			}
			mu.Lock()
			res.Hist.Merge(h)
			res.OK += ok
			res.Errors += failed
			res.Items += items
			mu.Unlock()
		}()
	}
	// The scheduler keeps its own thread so precise sleeps (see
	// sleepUntil) do not hold up other goroutines.
	runtime.LockOSThread()
	restoreSlack := lowTimerSlack()
	sched := newSchedule(opts)
	for seq, due := range sched.due(ctx, sleepUntil) {
		record := sched.recorded(due)
		select {
		case queue <- send{seq, due, record}:
			if record {
				res.Sent++
			}
		default:
			// MaxInFlight sends already waiting: count it, never delay.
			if record {
				res.Dropped++
			}
		}
	}
	restoreSlack()
	runtime.UnlockOSThread()
	close(queue)
	wg.Wait()
	res.Duration = time.Since(sched.measureFrom)
	if p := firstErr.Load(); p != nil {
		res.FirstErr = *p
	}
	return res
}

// schedule is when an open loop's requests are due: one every interval
// from start, those before measureFrom sent as a warm-up, none from end.
type schedule struct {
	start, measureFrom, end time.Time
	interval                time.Duration
}

func newSchedule(opts Options) schedule {
	start := time.Now()
	s := schedule{start: start, measureFrom: start.Add(opts.Warmup), interval: time.Duration(float64(time.Second) / opts.Rate)}
	s.end = s.measureFrom.Add(opts.Duration)
	return s
}

// due yields each request's sequence number and due time, after sleep
// returned at that time, until the end or ctx is done.
func (s schedule) due(ctx context.Context, sleep func(time.Time)) iter.Seq2[int64, time.Time] {
	return func(yield func(int64, time.Time) bool) {
		for seq := int64(0); ; seq++ {
			due := s.start.Add(time.Duration(seq) * s.interval)
			if !due.Before(s.end) || ctx.Err() != nil {
				return
			}
			sleep(due)
			if !yield(seq, due) {
				return
			}
		}
	}
}

// recorded says whether a request due then is measured (not a warm-up).
func (s schedule) recorded(due time.Time) bool { return !due.Before(s.measureFrom) }

// ClosedLoop runs workers that each send as soon as their last answer came
// back, for d: the saturation throughput.
func ClosedLoop(ctx context.Context, name string, workers int, d time.Duration, do Request) *Result {
	res := &Result{Name: name, Hist: newHist()}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		seq atomic.Int64
	)
	start := time.Now()
	end := start.Add(d)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := newHist()
			for time.Now().Before(end) && ctx.Err() == nil {
				t0 := time.Now()
				items, err := do(ctx, seq.Add(1))
				atomic.AddInt64(&res.Sent, 1)
				if err != nil {
					atomic.AddInt64(&res.Errors, 1)
					mu.Lock()
					if res.FirstErr == nil {
						res.FirstErr = err
					}
					mu.Unlock()
					continue
				}
				atomic.AddInt64(&res.OK, 1)
				atomic.AddInt64(&res.Items, int64(items))
				_ = h.RecordValue(max(1, time.Since(t0).Microseconds()))
			}
			mu.Lock()
			res.Hist.Merge(h)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Duration = time.Since(start)
	return res
}

// Report prints results as a table, each with its ratio to the baseline.
func Report(w io.Writer, baseline *Result, results ...*Result) {
	if baseline != nil {
		fmt.Fprintln(w, baseline.String())
	}
	for _, r := range results {
		fmt.Fprintln(w, r.String())
		if baseline != nil && baseline.Throughput() > 0 {
			fmt.Fprintf(w, "%-28s throughput %.0f%% of baseline, p99 %.2fx baseline\n", "", 100*r.ItemRate()/max(baseline.ItemRate(), 1), float64(r.Quantile(99))/max(float64(baseline.Quantile(99)), 1))
		}
		if r.FirstErr != nil {
			fmt.Fprintf(w, "%-28s first error: %v\n", "", r.FirstErr)
		}
	}
}
