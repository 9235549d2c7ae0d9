package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SoakOptions shape Soak: a steady mixed load against ingest and the
// scorer for Duration while the process's resources are sampled.
type SoakOptions struct {
	IngestURL, ScorerURL string
	WriteKey, ReadKey    string
	// Model is predicted with; "" sends no predictions.
	Model    string
	Duration time.Duration // default 30 s
	// EventsPerSecond are posted in batches of 10 (default 500);
	// PredictsPerSecond one user each (default 200).
	EventsPerSecond, PredictsPerSecond float64
	// SSEClients are kept connected to the live feed, each leaving after
	// 0.1-1 s and replaced by a new one (default 20).
	SSEClients  int
	Users       int           // user ids the events and predictions spread over (default 1,000)
	SampleEvery time.Duration // default 1 s
	// Out receives a line per sample; nil is quiet.
	Out io.Writer
}

func (o *SoakOptions) ensureDefaults() {
	if o.Duration <= 0 {
		o.Duration = 30 * time.Second
	}
	if o.EventsPerSecond <= 0 {
		o.EventsPerSecond = 500
	}
	if o.PredictsPerSecond <= 0 {
		o.PredictsPerSecond = 200
	}
	if o.SSEClients <= 0 {
		o.SSEClients = 20
	}
	if o.Users <= 0 {
		o.Users = 1000
	}
	if o.SampleEvery <= 0 {
		o.SampleEvery = time.Second
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
}

// Sample is this process's resources at one moment.
type Sample struct {
	At         time.Duration // since the start
	Goroutines int
	HeapBytes  uint64 // live heap after the last GC (HeapAlloc right after a forced GC)
	FDs        int    // open file descriptors, -1 where unknown
}

// SoakReport is what a soak did and saw.
type SoakReport struct {
	Samples             []Sample
	Events, Predictions int64 // answered 200
	SSESessions         int64 // live-feed clients that connected and left
	Errors              int64
	FirstErr            error
}

// Soak runs the mixed load for o.Duration, sampling this process (run
// the services in it, as `pulse loadtest soak` does) every SampleEvery.
func Soak(ctx context.Context, o SoakOptions) (*SoakReport, error) {
	o.ensureDefaults()
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	rep := &SoakReport{}
	var errs atomic.Int64
	var firstErr atomic.Pointer[error]
	fail := func(err error) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, &err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	var events, predictions, sessions atomic.Int64
	var wg sync.WaitGroup
	every := func(rate float64, f func(rng *rand.Rand)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
			t := time.NewTicker(time.Duration(float64(time.Second) / rate))
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					f(rng)
				}
			}
		}()
	}
	// Four senders of each kind share the rate.
	for range 4 {
		every(o.EventsPerSecond/10/4, func(rng *rand.Rand) {
			if err := postBatch(ctx, client, o, rng); err != nil {
				fail(err)
				return
			}
			events.Add(10)
		})
		if o.Model != "" {
			every(o.PredictsPerSecond/4, func(rng *rand.Rand) {
				if err := predictOne(ctx, client, o, rng); err != nil {
					fail(err)
					return
				}
				predictions.Add(1)
			})
		}
	}
	for range o.SSEClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
			for ctx.Err() == nil {
				stay := 100*time.Millisecond + time.Duration(rng.Int64N(int64(900*time.Millisecond)))
				if err := liveSession(ctx, o, stay); err != nil {
					fail(err)
					time.Sleep(100 * time.Millisecond)
					continue
				}
				sessions.Add(1)
			}
		}()
	}
	start := time.Now()
	tick := time.NewTicker(o.SampleEvery)
	defer tick.Stop()
	fmt.Fprintf(o.Out, "%8s %10s %12s %6s %10s %12s %8s %7s\n", "t", "goroutines", "heap", "fds", "events", "predictions", "sse", "errors")
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
		}
		if done {
			break
		}
		s := SampleProcess()
		s.At = time.Since(start).Round(time.Millisecond)
		rep.Samples = append(rep.Samples, s)
		fmt.Fprintf(o.Out, "%8s %10d %10.1fMB %6d %10d %12d %8d %7d\n", s.At.Round(time.Second), s.Goroutines, float64(s.HeapBytes)/(1<<20), s.FDs,
			events.Load(), predictions.Load(), sessions.Load(), errs.Load())
	}
	wg.Wait()
	rep.Events, rep.Predictions, rep.SSESessions, rep.Errors = events.Load(), predictions.Load(), sessions.Load(), errs.Load()
	if p := firstErr.Load(); p != nil {
		rep.FirstErr = *p
	}
	return rep, nil
}

// SampleProcess samples this process now, after a GC so that the heap
// is what is live.
func SampleProcess() Sample {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds := -1
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		fds = len(ents)
	}
	return Sample{Goroutines: runtime.NumGoroutine(), HeapBytes: ms.HeapAlloc, FDs: fds}
}

// Flat checks that the samples of the last third stay within bounds of
// those of the first third (after the first sample, the warm-up):
// goroutines and file descriptors by at most slack plus 10%, and with
// heap the live heap by at most 50% plus 16 MiB. Resources a load leaks
// grow with time; these bounds leave room for caches filling and pools
// settling. Leave heap off when the process holds an embedded Kafka
// (kfake keeps every record in memory: its log grows with the load).
func Flat(samples []Sample, slack int, heap bool) error {
	if len(samples) < 4 {
		return fmt.Errorf("%d samples: too few to tell a trend", len(samples))
	}
	s := samples[1:]
	n := len(s) / 3
	early, late := s[:n], s[len(s)-n:]
	peak := func(ss []Sample, f func(Sample) float64) float64 {
		m := 0.0
		for _, x := range ss {
			m = max(m, f(x))
		}
		return m
	}
	var errs []string
	check := func(what string, f func(Sample) float64, limit func(float64) float64) {
		e, l := peak(early, f), peak(late, f)
		if l > limit(e) {
			errs = append(errs, fmt.Sprintf("%s grew from %.0f to %.0f (limit %.0f)", what, e, l, limit(e)))
		}
	}
	check("goroutines", func(x Sample) float64 { return float64(x.Goroutines) }, func(e float64) float64 { return e*1.1 + float64(slack) })
	if early[0].FDs >= 0 {
		check("file descriptors", func(x Sample) float64 { return float64(x.FDs) }, func(e float64) float64 { return e*1.1 + float64(slack) })
	}
	if heap {
		check("live heap bytes", func(x Sample) float64 { return float64(x.HeapBytes) }, func(e float64) float64 { return e*1.5 + 16<<20 })
	}
	if len(errs) > 0 {
		return errors.New("not flat: " + strings.Join(errs, "; "))
	}
	return nil
}

func postBatch(ctx context.Context, c *http.Client, o SoakOptions, rng *rand.Rand) error {
	var b bytes.Buffer
	b.WriteString(`{"batch":[`)
	for i := range 10 {
		if i > 0 {
			b.WriteByte(',')
		}
		user := rng.IntN(o.Users)
		switch rng.IntN(3) {
		case 0:
			fmt.Fprintf(&b, `{"type":"track","userId":"soak-%d","event":"Order Completed","properties":{"revenue":%d}}`, user, 10+rng.IntN(200))
		case 1:
			fmt.Fprintf(&b, `{"type":"track","userId":"soak-%d","event":"Product Viewed","properties":{"product_id":"p%d"}}`, user, rng.IntN(50))
		default:
			fmt.Fprintf(&b, `{"type":"page","userId":"soak-%d","name":"home"}`, user)
		}
	}
	b.WriteString(`]}`)
	return call(ctx, c, o.IngestURL+"/v1/batch", o.WriteKey, b.Bytes())
}

func predictOne(ctx context.Context, c *http.Client, o SoakOptions, rng *rand.Rand) error {
	body := fmt.Sprintf(`{"model":%q,"features":[{"user":{"id":"soak-%d"}}]}`, o.Model, rng.IntN(o.Users))
	return call(ctx, c, o.ScorerURL+"/v1/predict", o.ReadKey, []byte(body))
}

func call(ctx context.Context, c *http.Client, url, key string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil // the soak ended
		}
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, b)
	}
	return nil
}

// liveSession connects to the live feed, reads it for stay, and leaves:
// on its own connection, as a browser tab does, closed at the end.
func liveSession(ctx context.Context, o SoakOptions, stay time.Duration) error {
	sctx, cancel := context.WithTimeout(ctx, stay)
	defer cancel()
	req, err := http.NewRequestWithContext(sctx, "GET", o.ScorerURL+"/v1/segments/live", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+o.ReadKey)
	req.Header.Set("Accept", "text/event-stream")
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		if sctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("live feed: %d %s", resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
	}
	return nil // ended by stay (or the soak's end)
}
