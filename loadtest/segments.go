package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/pulse-rt/pulse/segment"
)

// SegmentsOptions configure `pulse loadtest segments`.
type SegmentsOptions struct {
	URL       string // ingest base URL
	WriteKey  string
	ScorerURL string // scorer base URL, for GET /v1/segments/live
	ReadKey   string
	// Enter is the segment a probe event makes its (new) user enter.
	Enter string
	// Expire, if set, is a segment a probe user enters and, when a short
	// window slides past the probe, leaves with no new event: each exit's
	// lateness (received on the SSE stream − the record's at, the moment
	// the change became true) is measured too.
	Expire   string
	Rate     float64       // events/s; default 5,000
	Batch    int           // events per request; default 50 (one of them the probe)
	Duration time.Duration // default 10s
	Warmup   time.Duration // default 2s
	Users    int           // background user ids; default 100,000
	// Linger waits for the last exits after the traffic; default 5s.
	Linger time.Duration
}

// EnsureDefaults sets each zero field that has a default to it, as the
// fields' comments state.
func (o *SegmentsOptions) EnsureDefaults() {
	if o.Rate == 0 {
		o.Rate = 5_000
	}
	if o.Batch == 0 {
		o.Batch = 50
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
	if o.Linger == 0 {
		o.Linger = 5 * time.Second
	}
}

// SegmentsReport is what `pulse loadtest segments` measured.
type SegmentsReport struct {
	Ingest *Result
	// Enter: probe's HTTP 200 received → its enter record received on SSE.
	Enter *hdrhistogram.Histogram
	// EnterBeforeAck counts enters received before the 200 (recorded as 0).
	EnterBeforeAck int
	Probes         int
	MissingEnters  int
	// Exit lateness: exit record received − its at (when it became true).
	Exit         *hdrhistogram.Histogram
	MissingExits int
}

type probeTimes struct {
	acked, entered, exited time.Time
	exitAt                 time.Time
}

// Segments sends open-loop batches to ingest with one probe (a new user)
// per request and measures, on the scorer's live feed, how long after
// ingest's HTTP 200 the probe's enter record arrives and, with Expire, how
// late after the moment it became true the window-expiry exit arrives.
func Segments(ctx context.Context, o SegmentsOptions, w io.Writer) (*SegmentsReport, error) {
	o.EnsureDefaults()
	var (
		mu     sync.Mutex
		probes = map[string]*probeTimes{}
	)
	get := func(id string) *probeTimes {
		p := probes[id]
		if p == nil {
			p = &probeTimes{}
			probes[id] = p
		}
		return p
	}
	segs := o.Enter
	if o.Expire != "" {
		segs += "," + o.Expire
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	u := o.ScorerURL + "/v1/segments/live?segment=" + url.QueryEscape(segs) + "&api_key=" + url.QueryEscape(o.ReadKey)
	req, err := http.NewRequestWithContext(sctx, "GET", u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot open the live feed: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("live feed: status %d: %s", resp.StatusCode, b)
	}
	sseDone := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if !bytes.HasPrefix(line, []byte("data: ")) {
				continue
			}
			now := time.Now()
			rec, _, err := segment.DecodeRecordRaw(line[len("data: "):])
			if err != nil || !strings.HasPrefix(rec.EntityID, "probe-") {
				continue
			}
			mu.Lock()
			p := get(rec.EntityID)
			switch {
			case rec.Segment == o.Enter && rec.Change == segment.ChangeEnter && p.entered.IsZero():
				p.entered = now
			case rec.Segment == o.Expire && rec.Change == segment.ChangeExit && p.exited.IsZero():
				p.exited, p.exitAt = now, rec.At
			}
			mu.Unlock()
		}
		sseDone <- sc.Err()
	}()

	tr := &traffic{URL: o.URL, WriteKey: o.WriteKey, Rate: o.Rate, Batch: o.Batch, Users: o.Users, Duration: o.Duration, Warmup: o.Warmup,
		OnAck: func(user string, _, acked time.Time) {
			mu.Lock()
			get(user).acked = acked
			mu.Unlock()
		}}
	fmt.Fprintf(w, "segments: %.0f events/s to %s/v1/batch in batches of %d, one probe (a new user) per batch, %s after %s warm-up; live feed %s\n",
		o.Rate, o.URL, o.Batch, o.Duration, o.Warmup, o.ScorerURL)
	rep := &SegmentsReport{Enter: newHist(), Exit: newHist()}
	rep.Ingest = tr.run(ctx)
	// Wait for the enters (and exits) of the last probes.
	deadline := time.Now().Add(o.Linger)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		mu.Lock()
		pending := 0
		for _, p := range probes {
			if !p.acked.IsZero() && (p.entered.IsZero() || (o.Expire != "" && p.exited.IsZero())) {
				pending++
			}
		}
		mu.Unlock()
		if pending == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	mu.Lock()
	defer mu.Unlock()
	for _, p := range probes {
		if p.acked.IsZero() {
			continue // a warm-up probe
		}
		rep.Probes++
		if p.entered.IsZero() {
			rep.MissingEnters++
		} else {
			lat := p.entered.Sub(p.acked)
			if lat < 0 {
				rep.EnterBeforeAck++
				lat = 0
			}
			rep.Enter.RecordValue(max(1, lat.Microseconds()))
		}
		if o.Expire != "" {
			if p.exited.IsZero() {
				rep.MissingExits++
			} else {
				rep.Exit.RecordValue(max(1, p.exited.Sub(p.exitAt).Microseconds()))
			}
		}
	}
	Report(w, nil, rep.Ingest)
	fmt.Fprintf(w, "%-28s %d probes: p50 %8s p99 %8s p99.9 %8s max %8s (before the 200: %d, missing after %s: %d)\n",
		"HTTP 200 -> SSE enter", rep.Probes, q(rep.Enter, 50), q(rep.Enter, 99), q(rep.Enter, 99.9), q(rep.Enter, 100), rep.EnterBeforeAck, o.Linger, rep.MissingEnters)
	if o.Expire != "" {
		fmt.Fprintf(w, "%-28s %d exits: p50 %8s p99 %8s p99.9 %8s max %8s (missing: %d)\n",
			"window expiry -> SSE exit", rep.Exit.TotalCount(), q(rep.Exit, 50), q(rep.Exit, 99), q(rep.Exit, 99.9), q(rep.Exit, 100), rep.MissingExits)
	}
	return rep, nil
}
