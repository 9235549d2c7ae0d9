package loadtest

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

// ProbeEvent is the track event name a probe carries; the freshness and
// segments targets expect a feature counting it (see the `pulse loadtest`
// e2e config).
const ProbeEvent = "Loadtest Probe"

// traffic is the open-loop HTTP load of the end-to-end targets: batches to
// ingest's /v1/batch at a fixed event rate, every event with a fresh
// messageId (so the stream does real work, no dedupe), and one probe per
// request: an event of a user id never used before, whose effects the
// target watches for.
type traffic struct {
	URL      string
	WriteKey string
	Rate     float64 // events/s
	Batch    int     // events per request
	Users    int     // background user ids
	Duration time.Duration
	Warmup   time.Duration
	// OnAck is called when the request carrying probe user id got its
	// HTTP 200, with the time it was scheduled and the time the answer
	// came. Called only for measured (after warm-up) requests.
	OnAck func(user string, due, acked time.Time)
}

func (tr *traffic) run(ctx context.Context) *Result {
	client := &fasthttp.Client{MaxConnsPerHost: 4096, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(tr.WriteKey+":"))
	url := tr.URL + "/v1/batch"
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	warmEnd := time.Now().Add(tr.Warmup)
	post := func(ctx context.Context, seq int64) (int, error) {
		r := rand.New(rand.NewPCG(uint64(seq), 7))
		probe := "probe-" + run + "-" + strconv.FormatInt(seq, 10)
		body := make([]byte, 0, 256*tr.Batch)
		body = append(body, `{"batch":[`...)
		for j := range tr.Batch {
			if j > 0 {
				body = append(body, ',')
			}
			id := run + "-" + strconv.FormatInt(seq, 10) + "-" + strconv.Itoa(j)
			if j == 0 {
				body = fmt.Appendf(body, `{"type":"track","messageId":%q,"userId":%q,"event":%q,"properties":{"revenue":1}}`, id, probe, ProbeEvent)
				continue
			}
			name := eventNames[r.IntN(len(eventNames))]
			body = fmt.Appendf(body, `{"type":"track","messageId":%q,"userId":"%d","event":%q,"properties":{"product_id":"p-%d","category":"c-%d","price":%.2f,"revenue":%.2f,"currency":"USD"}}`,
				id, r.IntN(tr.Users), name, r.IntN(5000), r.IntN(40), r.Float64()*100, r.Float64()*200)
		}
		body = append(body, `]}`...)
		due := time.Now() // OpenLoop measures from the schedule; close enough for OnAck's due
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(url)
		req.Header.SetMethod("POST")
		req.Header.SetContentType("application/json")
		req.Header.Set("Authorization", auth)
		req.SetBodyRaw(body)
		if err := client.Do(req, resp); err != nil {
			return 0, err
		}
		acked := time.Now()
		if resp.StatusCode() != 200 {
			return 0, fmt.Errorf("status %d: %s", resp.StatusCode(), resp.Body())
		}
		if tr.OnAck != nil && !due.Before(warmEnd) {
			tr.OnAck(probe, due, acked)
		}
		return tr.Batch, nil
	}
	return OpenLoop(ctx, Options{Name: "ingest (HTTP 200)", Rate: tr.Rate / float64(tr.Batch), Duration: tr.Duration, Warmup: tr.Warmup}, post)
}

// FreshnessOptions configure `pulse loadtest freshness`.
type FreshnessOptions struct {
	URL      string // ingest base URL
	WriteKey string
	Rate     float64       // events/s; default 10,000
	Batch    int           // events per request; default 100 (one of them the probe)
	Duration time.Duration // default 10s
	Warmup   time.Duration // default 2s
	Users    int           // background user ids; default 100,000
	// WrittenAt, when set, is when the online store's Write holding the
	// user's first vector returned (a hook on the store): from then on a
	// Get serves it. Asked after the traffic, for every probe.
	WrittenAt func(user string) (time.Time, bool)
	// Lookup, used when WrittenAt is nil, reports whether the online store
	// has a vector for the user: a probe user's vector exists only once
	// its event was processed. Each probe is polled from its 200 on.
	Lookup func(ctx context.Context, user string) (bool, error)
	// Poll is how often a probe's lookup is retried; default 1ms. The
	// figures are late by up to one Poll, and the polling itself loads
	// the machine.
	Poll time.Duration
	// Timeout gives up on a probe; default 10s.
	Timeout time.Duration
}

// EnsureDefaults sets each zero field that has a default to it, as the
// fields' comments state.
func (o *FreshnessOptions) EnsureDefaults() {
	if o.Rate == 0 {
		o.Rate = 10_000
	}
	if o.Batch == 0 {
		o.Batch = 100
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
	if o.Poll == 0 {
		o.Poll = time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
}

// FreshnessReport is what `pulse loadtest freshness` measured.
type FreshnessReport struct {
	Ingest *Result
	// FromAck: probe's HTTP 200 received → its vector first seen by Lookup.
	FromAck *hdrhistogram.Histogram
	// FromSend: probe's request sent → its vector first seen.
	FromSend *hdrhistogram.Histogram
	// BeforeAck counts probes whose vector was readable at the first
	// lookup after the 200 (recorded as 0 in FromAck).
	BeforeAck int64
	Probes    int64
	Missing   int64 // not readable within Timeout
	LookupErr error
}

// Freshness sends open-loop batches to ingest and, for one probe event
// per request, measures how long after ingest's HTTP 200 the online store
// serves the probe user's vector, by polling Lookup.
func Freshness(ctx context.Context, o FreshnessOptions, w io.Writer) (*FreshnessReport, error) {
	o.EnsureDefaults()
	rep := &FreshnessReport{FromAck: newHist(), FromSend: newHist()}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	var beforeAck, missing, probes atomic.Int64
	type ack struct {
		user       string
		due, acked time.Time
	}
	var acks []ack
	tr := &traffic{URL: o.URL, WriteKey: o.WriteKey, Rate: o.Rate, Batch: o.Batch, Users: o.Users, Duration: o.Duration, Warmup: o.Warmup,
		OnAck: func(user string, due, acked time.Time) {
			probes.Add(1)
			if o.WrittenAt != nil {
				mu.Lock()
				acks = append(acks, ack{user, due, acked})
				mu.Unlock()
				return
			}
			wg.Go(func() {
				deadline := acked.Add(o.Timeout)
				first := true
				for {
					ok, err := o.Lookup(ctx, user)
					seen := time.Now()
					if err != nil {
						mu.Lock()
						if rep.LookupErr == nil {
							rep.LookupErr = err
						}
						mu.Unlock()
					}
					if ok {
						lat := seen.Sub(acked)
						if first {
							beforeAck.Add(1)
							lat = 0
						}
						mu.Lock()
						rep.FromAck.RecordValue(max(1, lat.Microseconds()))
						rep.FromSend.RecordValue(max(1, seen.Sub(due).Microseconds()))
						mu.Unlock()
						return
					}
					first = false
					if seen.After(deadline) || ctx.Err() != nil {
						missing.Add(1)
						return
					}
					time.Sleep(o.Poll)
				}
			})
		}}
	fmt.Fprintf(w, "freshness: %.0f events/s to %s/v1/batch in batches of %d, one probe (a new user) per batch, %s after %s warm-up\n",
		o.Rate, o.URL, o.Batch, o.Duration, o.Warmup)
	rep.Ingest = tr.run(ctx)
	wg.Wait()
	how := fmt.Sprintf("polled every %s", o.Poll)
	if o.WrittenAt != nil {
		how = "store write returned"
		deadline := time.Now().Add(o.Timeout)
		for _, a := range acks {
			at, ok := o.WrittenAt(a.user)
			for !ok && time.Now().Before(deadline) && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
				at, ok = o.WrittenAt(a.user)
			}
			if !ok {
				missing.Add(1)
				continue
			}
			lat := at.Sub(a.acked)
			if lat < 0 {
				beforeAck.Add(1)
				lat = 0
			}
			rep.FromAck.RecordValue(max(1, lat.Microseconds()))
			rep.FromSend.RecordValue(max(1, at.Sub(a.due).Microseconds()))
		}
	}
	rep.Probes, rep.BeforeAck, rep.Missing = probes.Load(), beforeAck.Load(), missing.Load()
	Report(w, nil, rep.Ingest)
	fmt.Fprintf(w, "%-28s %d probes, %s: p50 %8s p99 %8s p99.9 %8s max %8s (readable before the 200 arrived: %d, missing after %s: %d)\n",
		"HTTP 200 -> store readable", rep.Probes, how, q(rep.FromAck, 50), q(rep.FromAck, 99), q(rep.FromAck, 99.9), q(rep.FromAck, 100), rep.BeforeAck, o.Timeout, rep.Missing)
	fmt.Fprintf(w, "%-28s p50 %8s p99 %8s p99.9 %8s max %8s\n",
		"request sent -> readable", q(rep.FromSend, 50), q(rep.FromSend, 99), q(rep.FromSend, 99.9), q(rep.FromSend, 100))
	if rep.LookupErr != nil {
		fmt.Fprintf(w, "%-28s first lookup error: %v\n", "", rep.LookupErr)
	}
	return rep, nil
}

func q(h *hdrhistogram.Histogram, quantile float64) string {
	if h.TotalCount() == 0 {
		return "-"
	}
	return fmtDur(time.Duration(h.ValueAtQuantile(quantile)) * time.Microsecond)
}
