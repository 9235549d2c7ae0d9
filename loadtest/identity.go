package loadtest

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	json "github.com/goccy/go-json"
	"github.com/valyala/fasthttp"
)

// IdentityOptions configure `pulse loadtest identity`: how long after an
// identify's HTTP 200 the merge is visible in the scorer's answer for the
// anonymous id, under background load.
type IdentityOptions struct {
	URL       string // ingest base URL
	WriteKey  string
	ScorerURL string // scorer base URL, for GET /v1/entities/user/{id}
	ReadKey   string
	Rate      float64       // background events/s; default 10,000
	Batch     int           // background events per request; default 100
	Merges    float64       // probe merges started per second; default 20
	Duration  time.Duration // default 10s
	Warmup    time.Duration // default 2s
	Users     int           // background user ids; default 100,000
	// Feature is the count of probe events (AddProbes'); default
	// loadtest_probes.
	Feature string
	// Poll is how often a probe's answer is asked for at first; default
	// 1ms. A probe waiting longer asks every 2% of its wait so far, so a
	// slow merge costs ~35 requests per doubling of its wait, not one a
	// millisecond (a hundred probes in flight polling every 1ms were
	// 100k scorer requests a second: the test loading what it measures);
	// the answer is late by at most that 2%.
	Poll    time.Duration
	Timeout time.Duration // gives up on a probe; default 10s
}

// EnsureDefaults sets each zero field that has a default to it, as the
// fields' comments state.
func (o *IdentityOptions) EnsureDefaults() {
	if o.Rate == 0 {
		o.Rate = 10_000
	}
	if o.Batch == 0 {
		o.Batch = 100
	}
	if o.Merges == 0 {
		o.Merges = 20
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Warmup == 0 {
		o.Warmup = 2 * time.Second
	}
	if o.Users == 0 {
		o.Users = 100_000
	}
	if o.Feature == "" {
		o.Feature = "loadtest_probes"
	}
	if o.Poll == 0 {
		o.Poll = time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
}

// IdentityReport is what `pulse loadtest identity` measured.
type IdentityReport struct {
	Background *Result
	// Merged: the identify's HTTP 200 → the scorer answers the anonymous
	// id with the user's canonical id and the anonymous events counted.
	Merged *hdrhistogram.Histogram
	// Served: the anonymous probe's HTTP 200 → the scorer answers it, in
	// the same run and by the same polling: one event's trip through the
	// stream, the same-run baseline a merge (four transactions in a row:
	// the identify's batch, the linker, the anonymous id's task, the
	// person's task) is read against.
	Served         *hdrhistogram.Histogram
	Probes, Failed int64
	FirstErr       error
}

// Identity runs background traffic and, Merges times a second, a probe: a
// probe event of a new anonymous id A, then (once A's vector is served) an
// identify of A as a new user U; it measures from the identify's 200 until
// GET /v1/entities/user/A answers canonical_id U with A's probe counted.
func Identity(ctx context.Context, o IdentityOptions, w io.Writer) (*IdentityReport, error) {
	o.EnsureDefaults()
	rep := &IdentityReport{Merged: newHist(), Served: newHist()}
	client := &fasthttp.Client{MaxConnsPerHost: 1024, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(o.WriteKey+":"))
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		failed atomic.Int64
		probes atomic.Int64
	)
	fail := func(err error) {
		failed.Add(1)
		mu.Lock()
		if rep.FirstErr == nil {
			rep.FirstErr = err
		}
		mu.Unlock()
	}
	post := func(body string) (time.Time, error) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(o.URL + "/v1/batch")
		req.Header.SetMethod("POST")
		req.Header.SetContentType("application/json")
		req.Header.Set("Authorization", auth)
		req.SetBodyString(body)
		if err := client.Do(req, resp); err != nil {
			return time.Time{}, err
		}
		if resp.StatusCode() != 200 {
			return time.Time{}, fmt.Errorf("ingest: status %d: %s", resp.StatusCode(), resp.Body())
		}
		return time.Now(), nil
	}
	// answer asks the scorer for id: its canonical id and probe count.
	answer := func(id string) (string, float64, error) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(o.ScorerURL + "/v1/entities/user/" + url.PathEscape(id) + "?api_key=" + url.QueryEscape(o.ReadKey))
		if err := client.Do(req, resp); err != nil {
			return "", 0, err
		}
		if resp.StatusCode() == 404 {
			return "", 0, nil
		}
		var e struct {
			CanonicalID string         `json:"canonical_id"`
			Features    map[string]any `json:"features"`
		}
		if resp.StatusCode() != 200 || json.Unmarshal(resp.Body(), &e) != nil {
			return "", 0, fmt.Errorf("scorer: status %d: %s", resp.StatusCode(), resp.Body())
		}
		n, _ := e.Features[o.Feature].(float64)
		return e.CanonicalID, n, nil
	}
	// until polls cond until it holds or the probe times out.
	until := func(from, deadline time.Time, cond func() (bool, error)) (time.Time, error) {
		for {
			ok, err := cond()
			if err != nil {
				return time.Time{}, err
			}
			if ok {
				return time.Now(), nil
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return time.Time{}, fmt.Errorf("not within %s", o.Timeout)
			}
			time.Sleep(max(o.Poll, time.Since(from)/50))
		}
	}
	probe := func(n int64) {
		anon, user := "ida-"+run+"-"+strconv.FormatInt(n, 10), "idu-"+run+"-"+strconv.FormatInt(n, 10)
		sent, err := post(fmt.Sprintf(`{"batch":[{"type":"track","messageId":"%s-p","anonymousId":%q,"event":%q}]}`, anon, anon, ProbeEvent))
		if err != nil {
			fail(err)
			return
		}
		served, err := until(sent, sent.Add(o.Timeout), func() (bool, error) {
			c, k, err := answer(anon)
			return c == anon && k >= 1, err
		})
		if err != nil {
			fail(fmt.Errorf("anonymous probe %s: %w", anon, err))
			return
		}
		mu.Lock()
		rep.Served.RecordValue(max(1, served.Sub(sent).Microseconds()))
		mu.Unlock()
		acked, err := post(fmt.Sprintf(`{"batch":[{"type":"identify","messageId":"%s-i","anonymousId":%q,"userId":%q}]}`, anon, anon, user))
		if err != nil {
			fail(err)
			return
		}
		seen, err := until(acked, acked.Add(o.Timeout), func() (bool, error) {
			c, k, err := answer(anon)
			return c == user && k >= 1, err
		})
		if err != nil {
			fail(fmt.Errorf("merge of %s into %s: %w", anon, user, err))
			return
		}
		mu.Lock()
		rep.Merged.RecordValue(max(1, seen.Sub(acked).Microseconds()))
		mu.Unlock()
	}
	fmt.Fprintf(w, "identity: %.0f events/s of background to %s/v1/batch, %.0f merges/s (anonymous probe, then identify), %s after %s warm-up\n",
		o.Rate, o.URL, o.Merges, o.Duration, o.Warmup)
	pctx, cancel := context.WithCancel(ctx)
	// The ticker's goroutine ends before wg.Wait: a probe it started after
	// Wait began would race with it (a WaitGroup's Add from zero must
	// happen before its Wait).
	ticking := make(chan struct{})
	go func() {
		defer close(ticking)
		select {
		case <-pctx.Done():
			return
		case <-time.After(o.Warmup):
		}
		t := time.NewTicker(time.Duration(float64(time.Second) / o.Merges))
		defer t.Stop()
		for n := int64(0); ; n++ {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			probes.Add(1)
			wg.Go(func() { probe(n) })
		}
	}()
	tr := &traffic{URL: o.URL, WriteKey: o.WriteKey, Rate: o.Rate, Batch: o.Batch, Users: o.Users, Duration: o.Duration, Warmup: o.Warmup}
	rep.Background = tr.run(ctx)
	cancel()
	<-ticking
	wg.Wait()
	rep.Probes, rep.Failed = probes.Load(), failed.Load()
	Report(w, nil, rep.Background)
	fmt.Fprintf(w, "%-28s %d probes, polled every %s at first: p50 %8s p99 %8s p99.9 %8s max %8s\n",
		"probe 200 -> served", rep.Served.TotalCount(), o.Poll, q(rep.Served, 50), q(rep.Served, 99), q(rep.Served, 99.9), q(rep.Served, 100))
	fmt.Fprintf(w, "%-28s %d probes, polled every %s at first: p50 %8s p99 %8s p99.9 %8s max %8s (failed: %d)\n",
		"identify 200 -> merged", rep.Probes, o.Poll, q(rep.Merged, 50), q(rep.Merged, 99), q(rep.Merged, 99.9), q(rep.Merged, 100), rep.Failed)
	if s := rep.Served.ValueAtQuantile(99); s > 0 && rep.Merged.TotalCount() > 0 {
		fmt.Fprintf(w, "%-28s p50 %.1fx, p99 %.1fx one event's (a merge is four transactions in a row)\n",
			"merged / served", float64(rep.Merged.ValueAtQuantile(50))/float64(max(1, rep.Served.ValueAtQuantile(50))), float64(rep.Merged.ValueAtQuantile(99))/float64(s))
	}
	if rep.FirstErr != nil {
		fmt.Fprintf(w, "%-28s first failure: %v\n", "", rep.FirstErr)
	}
	return rep, nil
}
