package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// PredictOptions configure `pulse loadtest predict`.
type PredictOptions struct {
	URL   string // scorer base URL, e.g. http://127.0.0.1:8081
	Key   string // read key
	Model string // default purchase_propensity
	// Entity is the entity type the model scores. Default "user".
	Entity string
	// Users is how many distinct ids requests pick from (uniformly, "0" ..
	// Users-1; the store should hold them all). Default 100,000.
	Users int
	// Rates are the open-loop phases, requests/s. Default 2000, 5000, 10000.
	Rates []float64
	// Duration of each phase. Default 10s.
	Duration time.Duration
	// Warmup before each phase, sent but not recorded. Default 1s.
	Warmup time.Duration
	// Connections are the closed-loop workers of the saturation phase.
	// Default 32.
	Connections int
	// Rounds splits each phase into this many turns, alternating the
	// baseline and the scorer, so a background load that comes and goes
	// weighs on both alike. Default 1: the baseline's whole phase, then the
	// scorer's.
	Rounds int
	// ServerCPU, when set, returns the CPU time used so far by a server
	// the scorer waits on outside this process (redis-server): the report
	// then gives its CPU per request next to this process's.
	ServerCPU func() (time.Duration, error)
	// StoreCache, when set, returns the scorer's store cache counts so
	// far (an embedded scorer's): each phase then reports the share of
	// its lookups the cache answered.
	StoreCache func() (hits, misses uint64)
	// Floor, when set, is one read of the scorer's store for a user id,
	// the least a prediction that misses every cache must do: each
	// open-loop phase then also measures a bare handler that calls it
	// before answering ("bare + store read"), the same-run floor under
	// the scorer on a miss.
	Floor func(ctx context.Context, user uint64) error
	// Trace, when set, names the execution traces to write: the scorer's
	// side of each open-loop phase (its first turn), Trace + "." + rate,
	// for `go tool trace -pprof=sched|net|sync`: where its requests
	// waited.
	Trace string
}

// EnsureDefaults sets each zero field that has a default to it, as the
// fields' comments state.
func (o *PredictOptions) EnsureDefaults() {
	if o.Model == "" {
		o.Model = "purchase_propensity"
	}
	if o.Entity == "" {
		o.Entity = "user"
	}
	if o.Users == 0 {
		o.Users = 100_000
	}
	if len(o.Rates) == 0 {
		o.Rates = []float64{2000, 5000, 10000}
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Warmup == 0 {
		o.Warmup = time.Second
	}
	if o.Connections == 0 {
		o.Connections = 32
	}
	if o.Rounds == 0 {
		o.Rounds = 1
	}
}

// PredictPhase is one rate measured against both targets.
type PredictPhase struct {
	Rate        float64
	Baseline    *Result // the bare handler
	Scorer      *Result
	BaselineCPU CPU
	ScorerCPU   CPU
	// Floor is the bare handler with one store read (with
	// PredictOptions.Floor).
	Floor *Result
	// The scorer's store cache over its turns, warm-ups included (with
	// PredictOptions.StoreCache).
	CacheHits, CacheMisses uint64
}

// PredictReport is what `pulse loadtest predict` measured.
type PredictReport struct {
	Phases             []PredictPhase
	BaselineSaturation *Result
	ScorerSaturation   *Result
	BaselineSatCPU     CPU
	ScorerSatCPU       CPU
}

// CPU is what a side of a phase used over its turns with their warm-ups:
// this process (the load generator, the bare handler and an embedded
// scorer) and PredictOptions.ServerCPU's server.
type CPU struct {
	Requests int64 // sent, warm-ups included
	Usage
}

// PerRequest is this process's and the server's CPU time per request.
func (c CPU) PerRequest() (self, server time.Duration) {
	if c.Requests == 0 {
		return 0, 0
	}
	if len(c.Others) > 0 && c.Others[0] > 0 {
		server = c.Others[0] / time.Duration(c.Requests)
	}
	return c.Self / time.Duration(c.Requests), server
}

// measureCPU wraps a turn so that what it used adds to *c.
func (o *PredictOptions) measureCPU(c *CPU, warmupSends int64, turn func(time.Duration) *Result) func(time.Duration) *Result {
	var sources []CPUSource
	if o.ServerCPU != nil {
		sources = []CPUSource{{Name: "store server", Read: o.ServerCPU}}
	}
	return func(d time.Duration) *Result {
		r := measure(&c.Usage, sources, func() *Result { return turn(d) })
		c.Requests += r.Sent + r.Dropped + warmupSends
		return r
	}
}

// reportCPU prints both sides' CPU per request.
func (o *PredictOptions) reportCPU(w io.Writer, base, scorer CPU) {
	bs, _ := base.PerRequest()
	ss, sv := scorer.PerRequest()
	if bs == 0 {
		return // no CPU accounting on this platform
	}
	diff := "+" + fmtDur(ss-bs)
	if ss < bs {
		diff = "-" + fmtDur(bs-ss)
	}
	line := fmt.Sprintf("%-28s CPU per request in this process: bare handler %s, scorer %s (%s)", "", fmtDur(bs), fmtDur(ss), diff)
	if o.ServerCPU != nil {
		line += fmt.Sprintf("; in the scorer's store server %s", fmtDur(sv))
	}
	fmt.Fprintln(w, line)
	fmt.Fprintf(w, "%-28s allocated per request: bare handler %d B, scorer %d B; garbage collections: %d, %d\n", "",
		base.Alloc/uint64(max(base.Requests, 1)), scorer.Alloc/uint64(max(scorer.Requests, 1)), base.GCs, scorer.GCs)
}

// countCache wraps a scorer turn so that its store cache hits and misses
// add to *hits and *misses.
func (o *PredictOptions) countCache(hits, misses *uint64, turn func(time.Duration) *Result) func(time.Duration) *Result {
	if o.StoreCache == nil {
		return turn
	}
	return func(d time.Duration) *Result {
		h0, m0 := o.StoreCache()
		r := turn(d)
		h1, m1 := o.StoreCache()
		*hits += h1 - h0
		*misses += m1 - m0
		return r
	}
}

func (o *PredictOptions) reportCache(w io.Writer, hits, misses uint64) {
	if o.StoreCache == nil || hits+misses == 0 {
		return
	}
	fmt.Fprintf(w, "%-28s store cache: %.1f%% of the scorer's lookups answered from memory (%d hits, %d misses)\n", "",
		100*float64(hits)/float64(hits+misses), hits, misses)
}

// Predict runs, for each rate, the same open-loop load first against a bare
// fasthttp handler answering a fixed body (started here, in this process: the
// ceiling of HTTP on this machine) and then against the scorer; then both
// closed-loop for saturation throughput. Every scorer answer must say
// model_used:true, or it counts as an error. With o.Floor, each open-loop
// phase also measures the bare handler plus one store read (startFloor).
func Predict(ctx context.Context, o PredictOptions, w io.Writer) (*PredictReport, error) {
	o.EnsureDefaults()
	bare, stop, err := startBare()
	if err != nil {
		return nil, err
	}
	defer stop()
	scorer := newPredictClient(o, o.URL, true)
	baseline := newPredictClient(o, bare, false)

	var floorOpen *HTTPClient
	if o.Floor != nil {
		floorURL, stopFloor, err := startFloor(o)
		if err != nil {
			return nil, err
		}
		defer stopFloor()
		if floorOpen, err = newPredictClient(o, floorURL, false).open(); err != nil {
			return nil, err
		}
		defer floorOpen.Close()
	}
	// Check once that the scorer answers as expected before measuring.
	if _, err := scorer.do(ctx, 0); err != nil {
		return nil, fmt.Errorf("scorer at %s is not answering predictions: %w", o.URL, err)
	}
	scorerOpen, err := scorer.open()
	if err != nil {
		return nil, err
	}
	defer scorerOpen.Close()
	baselineOpen, err := baseline.open()
	if err != nil {
		return nil, err
	}
	defer baselineOpen.Close()
	rep := &PredictReport{}
	fmt.Fprintf(w, "predict %s over %d %s ids; %s per phase in %d turns with the baseline, each after %s warm-up; baseline: bare fasthttp handler with a fixed body in this process\n",
		o.Model, o.Users, o.Entity, o.Duration, max(o.Rounds, 1), o.Warmup)
	for _, rate := range o.Rates {
		ph := PredictPhase{Rate: rate}
		warm := int64(rate * o.Warmup.Seconds())
		traced := o.Trace == ""
		sides := []func(time.Duration) *Result{
			o.measureCPU(&ph.BaselineCPU, warm, func(d time.Duration) *Result {
				return baselineOpen.OpenLoop(ctx, Options{Name: "bare handler", Rate: rate, Duration: d, Warmup: o.Warmup})
			}),
			o.measureCPU(&ph.ScorerCPU, warm, o.countCache(&ph.CacheHits, &ph.CacheMisses, func(d time.Duration) *Result {
				if !traced {
					traced = true
					stop, err := StartTrace(fmt.Sprintf("%s.%g", o.Trace, rate))
					if err != nil {
						fmt.Fprintf(w, "no trace: %v\n", err)
					} else {
						defer stop()
					}
				}
				return scorerOpen.OpenLoop(ctx, Options{Name: "scorer predict", Rate: rate, Duration: d, Warmup: o.Warmup})
			})),
		}
		if floorOpen != nil {
			sides = append(sides, func(d time.Duration) *Result {
				return floorOpen.OpenLoop(ctx, Options{Name: "bare + store read", Rate: rate, Duration: d, Warmup: o.Warmup})
			})
		}
		res := alternateN(o.Rounds, o.Duration, sides...)
		ph.Baseline, ph.Scorer = res[0], res[1]
		if floorOpen != nil {
			ph.Floor = res[2]
			Report(w, ph.Baseline, ph.Floor, ph.Scorer)
		} else {
			Report(w, ph.Baseline, ph.Scorer)
		}
		o.reportCPU(w, ph.BaselineCPU, ph.ScorerCPU)
		o.reportCache(w, ph.CacheHits, ph.CacheMisses)
		rep.Phases = append(rep.Phases, ph)
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	rep.BaselineSaturation, rep.ScorerSaturation = alternate(o.Rounds, o.Duration,
		o.measureCPU(&rep.BaselineSatCPU, 0, func(d time.Duration) *Result {
			return ClosedLoop(ctx, "bare handler (saturation)", o.Connections, d, baseline.do)
		}),
		o.measureCPU(&rep.ScorerSatCPU, 0, func(d time.Duration) *Result {
			return ClosedLoop(ctx, "scorer predict (saturation)", o.Connections, d, scorer.do)
		}))
	Report(w, rep.BaselineSaturation, rep.ScorerSaturation)
	o.reportCPU(w, rep.BaselineSatCPU, rep.ScorerSatCPU)
	return rep, ctx.Err()
}

// bareBody is the size and shape of a one-row predict answer.
const bareBody = `[{"model_used":true,"prediction":"yes","score":0.8312748670578003,"uuid":"5f0b9a57-2a7e-4c39-9a51-3f4c3b1c2d7e"}]`

// startBare serves bareBody on a free port of 127.0.0.1, reading the body
// as any handler would.
func startBare() (url string, stop func(), err error) {
	return listenAndServe("bare", func(ctx *fasthttp.RequestCtx) {
		_ = ctx.PostBody()
		ctx.SetContentType("application/json")
		ctx.SetBodyString(bareBody)
	})
}

// listenAndServe serves h on a free loopback port until stop, under a
// pprof label server=label, which tells its CPU from the rest of this
// process's in a -cpuprofile (pprof -tagfocus server=label).
func listenAndServe(label string, h fasthttp.RequestHandler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	return "http://" + ln.Addr().String(), serve(ln, label, h), nil
}

// serve serves h on ln, as listenAndServe does; stop returns once the
// server is down.
func serve(ln net.Listener, label string, h fasthttp.RequestHandler) (stop func()) {
	srv := &fasthttp.Server{Handler: h, NoDefaultServerHeader: true}
	served := make(chan struct{})
	go pprof.Do(context.Background(), pprof.Labels("server", label), func(context.Context) {
		_ = srv.Serve(ln)
		close(served)
	})
	return func() {
		_ = srv.Shutdown()
		<-served
	}
}

// startFloor serves bareBody after one PredictOptions.Floor read of a user
// picked as the scorer's requests pick them (a store read keyed by the
// request's user, with the body read and parsed no further).
func startFloor(o PredictOptions) (url string, stop func(), err error) {
	return listenAndServe("floor", func(ctx *fasthttp.RequestCtx) {
		user, _ := strconv.ParseUint(string(userOf(ctx.PostBody())), 10, 64)
		if err := o.Floor(ctx, user); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusServiceUnavailable)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(bareBody)
	})
}

// userOf finds the id in a body as predictClient.body writes it.
func userOf(body []byte) []byte {
	const mark = `:{"id":`
	i := bytes.Index(body, []byte(mark))
	if i < 0 {
		return nil
	}
	id := body[i+len(mark):]
	if j := bytes.IndexByte(id, '}'); j >= 0 {
		id = id[:j]
	}
	return id
}

type predictClient struct {
	o      PredictOptions
	url    string
	client *fasthttp.Client
	check  bool
	// sent numbers this client's requests across phases and turns: each
	// turn's seq starts at 0, and picking users from seq alone would send
	// every turn to the same users in the same order (a cache in the
	// server would then see them again, turn after turn).
	sent atomic.Uint64
}

func newPredictClient(o PredictOptions, base string, check bool) *predictClient {
	return &predictClient{
		o:      o,
		url:    base + "/v1/predict",
		client: &fasthttp.Client{MaxConnsPerHost: 4096, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second},
		check:  check,
	}
}

var modelUsed = []byte(`"model_used":true`)

// body appends the body of a predict for a user picked by this client's
// request number (a multiplicative hash, so consecutive requests hit
// scattered users and the sequence does not repeat from turn to turn).
func (c *predictClient) body(b []byte, _ int64) []byte {
	user := (c.sent.Add(1) * 0x9E3779B97F4A7C15 >> 17) % uint64(c.o.Users)
	b = append(b, `{"model":`...)
	b = strconv.AppendQuote(b, c.o.Model)
	b = append(b, `,"features":[{`...)
	b = strconv.AppendQuote(b, c.o.Entity)
	b = append(b, `:{"id":`...)
	b = strconv.AppendUint(b, user, 10)
	return append(b, `}}]}`...)
}

// checkAnswer reads an answer: a prediction made with the model, when c checks.
func (c *predictClient) checkAnswer(status int, body []byte) (int, error) {
	if status != fasthttp.StatusOK {
		return 0, fmt.Errorf("status %d: %.200s", status, body)
	}
	if c.check && !bytes.Contains(body, modelUsed) {
		return 0, fmt.Errorf("model not used (is the user in the store?): %.300s", body)
	}
	return 1, nil
}

// open is an open-loop client of the same requests.
func (c *predictClient) open() (*HTTPClient, error) {
	return NewHTTPClient(HTTPTarget{
		URL:    c.url,
		Header: "Content-Type: application/json\r\nAuthorization: Bearer " + c.o.Key + "\r\n",
		Body:   c.body,
		Check:  c.checkAnswer,
	})
}

// do sends one predict and waits for its answer (the closed loop).
func (c *predictClient) do(ctx context.Context, seq int64) (int, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(c.url)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", "Bearer "+c.o.Key)
	var arr [160]byte
	req.SetBody(c.body(arr[:0], seq))
	if err := c.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		return 0, err
	}
	return c.checkAnswer(resp.StatusCode(), resp.Body())
}
