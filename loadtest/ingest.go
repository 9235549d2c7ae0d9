package loadtest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// IngestOptions configure `pulse loadtest ingest`.
type IngestOptions struct {
	URL      string // ingest base URL, e.g. http://127.0.0.1:8080
	WriteKey string
	Brokers  []string // for the raw-produce baseline
	// BaselineTopic receives the baseline's records (not pulse.events, so
	// stream processors do not count them). Default pulse.loadtest.
	BaselineTopic string
	Batch         int           // events per request; default 100
	Rate          float64       // events/s; 0 = half the baseline's rate
	Duration      time.Duration // per phase; default 10s
	Users         int           // distinct user ids; default 100,000
	Connections   int           // closed-loop workers for saturation; default 32
	// Floor runs the open loop in Rounds turns against ingest and against
	// a floor server started in this process (startIngestFloor): the same
	// producer, the same records already normalised, no decoding. What
	// ingest's own work adds to the answers' latency is then measured in
	// one run, on one broker.
	Floor bool
	// FloorURL, with Floor, is a floor server already running in its own
	// process (`pulse loadtest floor`, ServeIngestFloor) to use instead.
	FloorURL string
	Rounds   int // turns of each open-loop side when Floor is set; default 3
	// Warmup, when positive, is spent before anything is measured: a raw
	// produce for a third of it, then the open loop at the target rate
	// (half that produce's rate unless Rate is set) against ingest, and
	// the floor, for the rest. A broker just started compiles its hot
	// paths for its first half minute or so under load, with C2 compiler
	// threads taking up to three quarters of a core: measured cold, ingest
	// at half the raw rate had a p99 of 42-420 ms against 23-25 ms on the
	// same broker warm (docs/BENCHMARKS.md, session 7).
	Warmup time.Duration
	// Processes are other processes the load lands on (the ingest server,
	// the broker): each phase reports their CPU per event next to this
	// process's, the steadier figure on a shared machine. Linux only.
	Processes []Process
}

// Process names a process whose CPU time a load test reports.
type Process struct {
	Name string
	PID  int
}

// EnsureDefaults sets each zero field that has a default to it, as the
// fields' comments state.
func (o *IngestOptions) EnsureDefaults() {
	if o.Batch == 0 {
		o.Batch = 100
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Users == 0 {
		o.Users = 100_000
	}
	if o.Connections == 0 {
		o.Connections = 32
	}
	if o.BaselineTopic == "" {
		o.BaselineTopic = "pulse.loadtest"
	}
	if o.Rounds == 0 {
		o.Rounds = 3
	}
}

// IngestReport is what `pulse loadtest ingest` measured.
type IngestReport struct {
	Baseline   *Result // raw franz-go produce of the same records
	OpenLoop   *Result // ingest at the target rate
	Floor      *Result // the floor server at the same rate (IngestOptions.Floor)
	Saturation *Result // ingest as fast as it goes
	// What IngestOptions.Warmup sent: records produced raw, requests to
	// ingest and to the floor.
	WarmupProduced, WarmupRequests, WarmupFloorRequests int64
	// The CPU time each phase used, warm-ups included.
	BaselineCPU, OpenLoopCPU, FloorCPU, SaturationCPU PhaseCPU
}

// PhaseCPU is what a phase used in this process and in each of
// IngestOptions.Processes, for Events events.
type PhaseCPU struct {
	Events int64
	Usage
}

// sources are the processes whose CPU a phase reports.
func (o *IngestOptions) sources() []CPUSource {
	s := make([]CPUSource, len(o.Processes))
	for i, p := range o.Processes {
		s[i] = PIDSource(p.Name, p.PID)
	}
	return s
}

// measure runs a phase and returns its result and CPU; events says how many
// events the phase sent, warm-up included.
func (o *IngestOptions) measure(phase func() *Result, events func(*Result) int64) (*Result, PhaseCPU) {
	var c PhaseCPU
	r := measure(&c.Usage, o.sources(), phase)
	c.Events = events(r)
	return r, c
}

// report prints CPU per event: this process's, each process's, and the
// sum; side, when set, names which side of an alternated phase it is.
func (c PhaseCPU) report(w io.Writer, procs []Process, side string) {
	if c.Events == 0 || c.Self == 0 {
		return
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(c.Events) }
	if side != "" {
		side = " (" + side + ")"
	}
	line := fmt.Sprintf("%-28s CPU per event%s: this process %.2f µs", "", side, per(c.Self))
	total := c.Self
	for i, p := range procs {
		if c.Others[i] < 0 {
			line += fmt.Sprintf(", %s unreadable", p.Name)
			continue
		}
		line += fmt.Sprintf(", %s %.2f µs", p.Name, per(c.Others[i]))
		total += c.Others[i]
	}
	if len(procs) > 0 {
		line += fmt.Sprintf("; all %.2f µs", per(total))
	}
	fmt.Fprintln(w, line)
}

// Ingest warms up the path (IngestOptions.Warmup), then measures the raw
// produce baseline, ingest open-loop at the target rate (in turns with the
// floor when IngestOptions.Floor is set), then ingest's saturation
// throughput, and prints each.
func Ingest(ctx context.Context, o IngestOptions, w io.Writer) (*IngestReport, error) {
	o.EnsureDefaults()
	bodies, records := sampleBatches(o, 256)
	rep := &IngestReport{}

	client := &fasthttp.Client{MaxConnsPerHost: 4096, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(o.WriteKey+":"))
	url := o.URL + "/v1/batch"
	// The bodies are never changed: sent as they are, not copied per request.
	body := func(_ []byte, seq int64) []byte { return bodies[int(seq)%len(bodies)] }
	check := func(status int, body []byte) (int, error) {
		if status != 200 {
			return 0, fmt.Errorf("status %d: %s", status, body)
		}
		return o.Batch, nil
	}
	post := func(ctx context.Context, seq int64) (int, error) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(url)
		req.Header.SetMethod("POST")
		req.Header.SetContentType("application/json")
		req.Header.Set("Authorization", auth)
		req.SetBodyRaw(body(nil, seq))
		if err := client.Do(req, resp); err != nil {
			return 0, err
		}
		return check(resp.StatusCode(), resp.Body())
	}
	target := func(url string) HTTPTarget {
		return HTTPTarget{
			URL:    url,
			Header: "Content-Type: application/json\r\nAuthorization: " + auth + "\r\n",
			Body:   body,
			Check:  check,
		}
	}
	open, err := NewHTTPClient(target(url))
	if err != nil {
		return nil, err
	}
	defer open.Close()
	var floor *HTTPClient
	if o.Floor {
		floorURL := o.FloorURL
		if floorURL == "" {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			stopFloor, err := startIngestFloor(ctx, o, records, ln)
			if err != nil {
				return nil, err
			}
			defer stopFloor()
			floorURL = "http://" + ln.Addr().String()
		}
		var err error
		if floor, err = NewHTTPClient(target(floorURL + "/v1/batch")); err != nil {
			return nil, err
		}
		defer floor.Close()
	}
	const warmup = time.Second
	// A side's turn at rate events/s: an open loop of d after a warm-up
	// second, its CPU added to *c.
	turn := func(cl *HTTPClient, name string, rate float64, c *PhaseCPU) func(time.Duration) *Result {
		perReq := rate / float64(o.Batch)
		return func(d time.Duration) *Result {
			r := measure(&c.Usage, o.sources(), func() *Result {
				return cl.OpenLoop(ctx, Options{Name: name, Rate: perReq, Duration: d, Warmup: warmup})
			})
			c.Events += (r.Sent + int64(perReq*warmup.Seconds())) * int64(o.Batch)
			return r
		}
	}

	if o.Warmup > 0 {
		wo := o
		wo.Duration = o.Warmup / 3
		fmt.Fprintf(w, "warm-up: raw produce for %s, then the open loop for %s (nothing measured)\n", wo.Duration, o.Warmup-wo.Duration)
		raw, err := rawProduce(ctx, wo, records)
		if err != nil {
			return nil, err
		}
		rep.WarmupProduced = raw.OK
		rate := o.Rate
		if rate == 0 {
			rate = raw.ItemRate() / 2
		}
		var c PhaseCPU
		sides := []func(time.Duration) *Result{turn(open, "warm-up", rate, &c)}
		if floor != nil {
			sides = append(sides, turn(floor, "warm-up floor", rate, &c))
		}
		const rounds = 2
		res := alternateN(rounds, o.Warmup-wo.Duration, sides...)
		// What each side sent: its turns' measured requests and their
		// warm-up seconds'.
		sent := func(r *Result) int64 { return r.Sent + rounds*int64(rate/float64(o.Batch)*warmup.Seconds()) }
		rep.WarmupRequests = sent(res[0])
		if floor != nil {
			rep.WarmupFloorRequests = sent(res[1])
		}
		for _, r := range res {
			if r.Errors > 0 {
				return nil, fmt.Errorf("%s: %d of %d requests failed: %v", r.Name, r.Errors, r.Sent, r.FirstErr)
			}
		}
	}

	fmt.Fprintf(w, "baseline: raw franz-go produce (idempotent, acks=all) of the same %d-byte records to %v, %s\n", avgLen(records), o.Brokers, o.Duration)
	var perr error
	base, baseCPU := o.measure(func() *Result {
		r, err := rawProduce(ctx, o, records)
		perr = err
		return r
	}, func(r *Result) int64 {
		if r == nil {
			return 0
		}
		return r.Sent
	})
	if perr != nil {
		return nil, perr
	}
	rep.Baseline, rep.BaselineCPU = base, baseCPU
	Report(w, nil, base)
	baseCPU.report(w, o.Processes, "")

	rate := o.Rate
	if rate == 0 {
		rate = base.ItemRate() / 2
	}
	perReq := rate / float64(o.Batch)
	if floor == nil {
		fmt.Fprintf(w, "\ningest open loop: %.0f events/s in batches of %d (%.0f req/s), %s\n", rate, o.Batch, perReq, o.Duration)
		rep.OpenLoop = turn(open, "ingest open loop", rate, &rep.OpenLoopCPU)(o.Duration)
		Report(w, base, rep.OpenLoop)
		rep.OpenLoopCPU.report(w, o.Processes, "")
	} else {
		fmt.Fprintf(w, "\nopen loop: %.0f events/s in batches of %d (%.0f req/s), %s per side in %d turns, ingest and the floor alternating\n", rate, o.Batch, perReq, o.Duration, o.Rounds)
		res := alternateN(o.Rounds, o.Duration,
			turn(open, "ingest open loop", rate, &rep.OpenLoopCPU),
			turn(floor, "floor: produce, no decoding", rate, &rep.FloorCPU))
		rep.OpenLoop, rep.Floor = res[0], res[1]
		Report(w, base, rep.Floor, rep.OpenLoop)
		fmt.Fprintf(w, "%-28s ingest p99 %.2fx the floor's\n", "", float64(rep.OpenLoop.Quantile(99))/max(float64(rep.Floor.Quantile(99)), 1))
		rep.FloorCPU.report(w, o.Processes, "floor")
		rep.OpenLoopCPU.report(w, o.Processes, "ingest")
	}

	fmt.Fprintf(w, "\ningest saturation: %d connections, closed loop, %s\n", o.Connections, o.Duration)
	rep.Saturation, rep.SaturationCPU = o.measure(func() *Result {
		return ClosedLoop(ctx, "ingest saturation", o.Connections, o.Duration, post)
	}, func(r *Result) int64 { return r.Sent * int64(o.Batch) })
	Report(w, base, rep.Saturation)
	rep.SaturationCPU.report(w, o.Processes, "")
	return rep, nil
}

func avgLen(recs [][]byte) int {
	n := 0
	for _, r := range recs {
		n += len(r)
	}
	return n / max(1, len(recs))
}

var eventNames = []string{"Product Viewed", "Product Viewed", "Product Viewed", "Product Added", "Session Started", "Order Completed"}

// sampleBatches builds n batch bodies and, for the baseline, the
// normalised records ingest would produce for their events.
func sampleBatches(o IngestOptions, n int) (bodies [][]byte, records [][]byte) {
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	for i := 0; i < n; i++ {
		var b bytes.Buffer
		b.WriteString(`{"batch":[`)
		for j := 0; j < o.Batch; j++ {
			if j > 0 {
				b.WriteByte(',')
			}
			user := strconv.Itoa(r.IntN(o.Users))
			name := eventNames[r.IntN(len(eventNames))]
			item := fmt.Sprintf(`{"type":"track","messageId":%q,"userId":%q,"event":%q,"properties":{"product_id":"p-%d","category":"c-%d","price":%.2f,"revenue":%.2f,"currency":"USD"},"context":{"library":{"name":"pulse-loadtest","version":"1"},"ip":"10.0.0.%d","userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36","page":{"path":"/products/%d","url":"https://shop.example.com/products/%d"}}}`,
				uuid.NewString(), user, name, r.IntN(5000), r.IntN(40), r.Float64()*100, r.Float64()*200, r.IntN(255), r.IntN(5000), r.IntN(5000))
			b.WriteString(item)
			if len(records) < 4096 {
				e, err := event.Decode([]byte(item), now, event.DefaultLimits, event.Defaults{})
				if err == nil {
					v, _ := e.Marshal()
					records = append(records, v)
				}
			}
		}
		b.WriteString(`]}`)
		bodies = append(bodies, b.Bytes())
	}
	return bodies, records
}

// rawProduce produces records as fast as the broker takes them with the
// producer settings ingest uses, for o.Duration.
func rawProduce(ctx context.Context, o IngestOptions, records [][]byte) (*Result, error) {
	cl, err := baselineProducer(ctx, o, "pulse-loadtest", records[0])
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	res := &Result{Name: "raw franz-go produce", Hist: newHist()}
	var (
		ok, failed atomic.Int64
		mu         sync.Mutex
		firstErr   error
		wg         sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(o.Duration)
	for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
		v := records[i%len(records)]
		sent := time.Now()
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i % o.Users)), Value: v}, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				failed.Add(1)
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			ok.Add(1)
			if i%64 == 0 {
				mu.Lock()
				_ = res.Hist.RecordValue(max(1, time.Since(sent).Microseconds()))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Duration = time.Since(start)
	res.OK, res.Errors, res.Sent = ok.Load(), failed.Load(), ok.Load()+failed.Load()
	res.Items = res.OK
	res.FirstErr = firstErr
	return res, nil
}

// baselineProducer is a producer with ingest's settings into the
// baseline topic, its metadata and the topic warmed up by producing first.
func baselineProducer(ctx context.Context, o IngestOptions, clientID string, first []byte) (*kgo.Client, error) {
	kc := config.Kafka{Brokers: o.Brokers, ClientID: clientID}
	cl, err := kafka.NewClient(kc, append(kafka.ProducerOpts(), kgo.DefaultProduceTopic(o.BaselineTopic), kgo.AllowAutoTopicCreation())...)
	if err != nil {
		return nil, err
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: first}).FirstErr(); err != nil {
		cl.Close()
		return nil, fmt.Errorf("%s: first produce to %s: %w", clientID, o.BaselineTopic, err)
	}
	return cl, nil
}

// startIngestFloor serves POST /v1/batch as the least any ingest must do
// per request: read the body, produce o.Batch records with ingest's
// producer settings, and answer once Kafka acknowledged them all. The
// records are the baseline's, already normalised, keyed as the baseline
// keys them; the body is not parsed, authenticated or validated. An ingest
// whose open loop cannot reach a latency the floor misses at the same rate
// is limited by the machine, not by its own work.
func startIngestFloor(ctx context.Context, o IngestOptions, records [][]byte, ln net.Listener) (stop func(), err error) {
	cl, err := baselineProducer(ctx, o, "pulse-loadtest-floor", records[0])
	if err != nil {
		ln.Close()
		return nil, err
	}
	var next atomic.Int64
	stopServer := serve(ln, "floor", func(rc *fasthttp.RequestCtx) {
		_ = rc.PostBody()
		first := next.Add(int64(o.Batch)) - int64(o.Batch)
		var (
			wg     sync.WaitGroup
			failed atomic.Pointer[error]
		)
		wg.Add(o.Batch)
		done := func(_ *kgo.Record, err error) {
			if err != nil {
				failed.CompareAndSwap(nil, &err)
			}
			wg.Done()
		}
		for i := first; i < first+int64(o.Batch); i++ {
			key := strconv.AppendInt(nil, i%int64(o.Users), 10)
			cl.TryProduce(ctx, &kgo.Record{Key: key, Value: records[i%int64(len(records))]}, done)
		}
		wg.Wait()
		rc.SetContentType("application/json")
		if err := failed.Load(); err != nil {
			rc.SetStatusCode(fasthttp.StatusServiceUnavailable)
			msg, _ := json.Marshal((*err).Error())
			rc.SetBodyString(`{"success":false,"error":` + string(msg) + `}`)
			return
		}
		rc.SetBodyString(`{"success":true}`)
	})
	return func() {
		stopServer()
		cl.Close()
	}, nil
}

// ServeIngestFloor runs the floor server of IngestOptions.Floor on ln, in
// a process of its own, until ctx ends: o names the brokers, the batch size
// and the users as the load test that uses it (IngestOptions.FloorURL)
// names them.
func ServeIngestFloor(ctx context.Context, o IngestOptions, ln net.Listener) error {
	o.EnsureDefaults()
	_, records := sampleBatches(o, 256)
	stop, err := startIngestFloor(ctx, o, records, ln)
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	return nil
}
