package scorer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

const liveTestConfig = `
keys:
  - name: reader
    key: rk
    scopes: [read]
  - name: writer
    key: wk
    scopes: [write]
kafka:
  partitions: 3
segments:
  - name: a
    rule: 'x > 1'
  - name: b
    rule: 'x > 2'
`

// liveEnv is a kfake broker with the segments topic, a producer, and Live
// servers started on it.
type liveEnv struct {
	t       testing.TB
	cfg     *config.Config
	produce *kgo.Client
	seq     int
	live    *scorer.Live // the last started
}

func newLiveEnv(t testing.TB) *liveEnv {
	t.Helper()
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	cfg, err := config.Parse([]byte(liveTestConfig), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kafka.Brokers = emb.Addrs()
	cl, err := kafka.NewClient(cfg.Kafka, append(kafka.ProducerOpts(), kgo.TransactionalID("live-test"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	return &liveEnv{t: t, cfg: cfg, produce: cl}
}

// send produces n records in one transaction (aborted when abort is set),
// to segments a and b in turn, entity ids spread over the partitions.
func (e *liveEnv) send(n int, abort bool) []segment.Record {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.produce.BeginTransaction(); err != nil {
		e.t.Fatal(err)
	}
	var out []segment.Record
	for range n {
		e.seq++
		seg := []string{"a", "b"}[e.seq%2]
		id := fmt.Sprint(e.seq % 5)
		rec := segment.Record{ID: fmt.Sprintf("c%d", e.seq), Segment: seg, Entity: "user", EntityID: id,
			Change: []string{"enter", "exit"}[e.seq/2%2], At: time.Unix(int64(e.seq), 0).UTC()}
		v, _ := json.Marshal(rec)
		if err := e.produce.ProduceSync(ctx, &kgo.Record{Topic: e.cfg.Kafka.Topics.Segments, Key: []byte(id), Value: v}).FirstErr(); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, rec)
	}
	end := kgo.TryCommit
	if abort {
		end = kgo.TryAbort
	}
	if err := e.produce.EndTransaction(ctx, end); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// start runs a Live and a fasthttp server in front of it until the test
// ends or stop is called. The server's short WriteTimeout checks that long
// streams survive it.
func (e *liveEnv) start(opts scorer.LiveOptions) (url string, stop func()) {
	e.t.Helper()
	live := scorer.NewLive(e.cfg, opts)
	e.live = live
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- live.Run(ctx) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: live.ServeSSE, WriteTimeout: 500 * time.Millisecond}
	go srv.Serve(ln)
	deadline := time.Now().Add(10 * time.Second)
	for !live.Ready() {
		if time.Now().After(deadline) {
			e.t.Fatal("live feed not ready after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-runDone; err != nil {
			e.t.Errorf("Live.Run: %v", err)
		}
		srv.Shutdown()
	}
	e.t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}

type sseEvent struct {
	ID, Event string
	Rec       segment.Record
}

// sseClient reads one stream; events arrive on C, which closes at its end.
type sseClient struct {
	C      chan sseEvent
	cancel context.CancelFunc
	lastID string // the last id field seen, events or heartbeats
}

func connect(t testing.TB, url, lastID string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		t.Fatalf("GET %s: %s %s", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	c := &sseClient{C: make(chan sseEvent, 1000), cancel: cancel}
	t.Cleanup(c.Close)
	go func() {
		defer close(c.C)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		var data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if data != "" {
					if err := json.Unmarshal([]byte(data), &ev.Rec); err != nil {
						ev.Event = "bad json: " + err.Error()
					}
					c.C <- ev
				}
				ev, data = sseEvent{}, ""
			case strings.HasPrefix(line, "id: "):
				ev.ID = line[4:]
				c.lastID = ev.ID
			case strings.HasPrefix(line, "event: "):
				ev.Event = line[7:]
			case strings.HasPrefix(line, "data: "):
				data = line[6:]
			}
		}
	}()
	return c
}

func (c *sseClient) Close() { c.cancel() }

// next waits for n events.
func (c *sseClient) next(t testing.TB, n int) []sseEvent {
	t.Helper()
	var out []sseEvent
	timeout := time.After(15 * time.Second)
	for len(out) < n {
		select {
		case ev, ok := <-c.C:
			if !ok {
				t.Fatalf("stream ended after %d of %d events", len(out), n)
			}
			out = append(out, ev)
		case <-timeout:
			t.Fatalf("got %d of %d events in 15s", len(out), n)
		}
	}
	return out
}

// quiet checks that nothing more arrives for a while.
func (c *sseClient) quiet(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case ev, ok := <-c.C:
		if ok {
			t.Fatalf("unexpected event %+v", ev)
		}
	case <-time.After(d):
	}
}

// sameRecords checks that got holds exactly want's change ids, each
// entity's changes in the order produced.
func sameRecords(t testing.TB, got []sseEvent, want []segment.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	order := map[string]int{}
	for i, r := range want {
		order[r.ID] = i
	}
	lastByEntity := map[string]int{}
	seen := map[string]bool{}
	for _, ev := range got {
		i, ok := order[ev.Rec.ID]
		if !ok || seen[ev.Rec.ID] {
			t.Fatalf("unexpected or repeated event %+v", ev)
		}
		seen[ev.Rec.ID] = true
		if ev.Event != ev.Rec.Change {
			t.Fatalf("event type %q for a %q record", ev.Event, ev.Rec.Change)
		}
		if prev, ok := lastByEntity[ev.Rec.EntityID]; ok && prev > i {
			t.Fatalf("entity %s: record %d after %d", ev.Rec.EntityID, i, prev)
		}
		lastByEntity[ev.Rec.EntityID] = i
		if _, err := scorer.ParseLivePosition(ev.ID); err != nil {
			t.Fatalf("event id: %v", err)
		}
	}
}

func only(recs []segment.Record, seg string) []segment.Record {
	var out []segment.Record
	for _, r := range recs {
		if r.Segment == seg {
			out = append(out, r)
		}
	}
	return out
}

func TestLiveStreamsInOrderAndFilters(t *testing.T) {
	e := newLiveEnv(t)
	e.send(4, false) // before the feed starts: not streamed to fresh clients
	url, _ := e.start(scorer.LiveOptions{Backfill: -1, Heartbeat: 200 * time.Millisecond})
	all := connect(t, url+"/v1/segments/live?api_key=rk", "")
	onlyA := connect(t, url+"/v1/segments/live?segment=a&api_key=rk", "")

	recs := e.send(30, false)
	e.send(5, true) // aborted: never streamed
	recs = append(recs, e.send(10, false)...)
	sameRecords(t, all.next(t, len(recs)), recs)
	sameRecords(t, onlyA.next(t, len(only(recs, "a"))), only(recs, "a"))
	// Heartbeats keep the stream open past the server's WriteTimeout.
	time.Sleep(time.Second)
	all.quiet(t, 200*time.Millisecond)
	more := e.send(3, false)
	sameRecords(t, all.next(t, 3), more)
}

func TestLiveAuthAndBadRequests(t *testing.T) {
	e := newLiveEnv(t)
	url, _ := e.start(scorer.LiveOptions{})
	f := func(path string, header map[string]string, want int) {
		t.Helper()
		req, _ := http.NewRequest("GET", url+path, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	f("/v1/segments/live", nil, 401)
	f("/v1/segments/live?api_key=nope", nil, 401)
	f("/v1/segments/live?api_key=wk", nil, 403)
	f("/v1/segments/live?api_key=rk&segment=a,zz", nil, 400)
	f("/v1/segments/live?api_key=rk", map[string]string{"Last-Event-ID": "garbage"}, 400)
	f("/v1/segments/live?api_key=rk&history=many", nil, 400)
	// A reload brings new segments and keys.
	cfg2, err := config.Parse([]byte(strings.Replace(liveTestConfig, "  - name: b\n", "  - name: zz\n    rule: 'x > 0'\n  - name: b\n", 1)), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg2.Keys[0].Key = "rk2"
	e.live.Reload(cfg2)
	f("/v1/segments/live?api_key=rk&segment=a", nil, 401)
	connect(t, url+"/v1/segments/live?api_key=rk2&segment=a,zz", "")
	req, _ := http.NewRequest("GET", url+"/v1/segments/live", nil)
	req.Header.Set("Authorization", "Bearer rk2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("Bearer key: %d", resp.StatusCode)
	}
}

// resume reads some events, disconnects, lets more records arrive, and
// reconnects with the last id: the second stream must hold exactly the
// rest.
func testResume(t *testing.T, opts scorer.LiveOptions, restart bool, filter string) {
	e := newLiveEnv(t)
	url, stop := e.start(opts)
	path := "/v1/segments/live?api_key=rk" + filter
	c := connect(t, url+path, "")
	recs := e.send(20, false)
	want := recs
	if filter != "" {
		want = only(recs, "a")
	}
	first := c.next(t, 6)
	c.Close()
	for range c.C {
	}
	last := first[len(first)-1].ID

	e.send(3, true)
	more := e.send(25, false)
	if filter != "" {
		more = only(more, "a")
	}
	if restart {
		stop()
		url, _ = e.start(opts)
	}
	c2 := connect(t, url+path, last)
	rest := append(append([]segment.Record{}, want[6:]...), more...)
	got := c2.next(t, len(rest))
	sameRecords(t, append(first, got...), append(append([]segment.Record{}, want...), more...))
	c2.quiet(t, 300*time.Millisecond)

	// And once more, live, after the catch-up.
	after := e.send(4, false)
	if filter != "" {
		after = only(after, "a")
	}
	sameRecords(t, c2.next(t, len(after)), after)
}

func TestLiveResumeFromBuffer(t *testing.T) {
	testResume(t, scorer.LiveOptions{Backfill: -1}, false, "")
}

func TestLiveResumeFromKafkaWhenBufferMoved(t *testing.T) {
	testResume(t, scorer.LiveOptions{Buffer: 5, Backfill: -1}, false, "")
}

func TestLiveResumeAcrossRestart(t *testing.T) {
	testResume(t, scorer.LiveOptions{Backfill: -1}, true, "")
}

func TestLiveResumeFilteredAcrossRestart(t *testing.T) {
	testResume(t, scorer.LiveOptions{Buffer: 8}, true, "&segment=a")
}

func TestLiveHistory(t *testing.T) {
	e := newLiveEnv(t)
	recs := e.send(12, false)
	url, _ := e.start(scorer.LiveOptions{})
	c := connect(t, url+"/v1/segments/live?api_key=rk&history=5&segment=a", "")
	// The buffer holds records in arrival order, which across partitions
	// need not be the produced order: check membership, not the exact five.
	got := c.next(t, 5)
	a := map[string]bool{}
	for _, r := range only(recs, "a") {
		a[r.ID] = true
	}
	for _, ev := range got {
		if !a[ev.Rec.ID] {
			t.Fatalf("history sent %+v, not a record of segment a", ev.Rec)
		}
		delete(a, ev.Rec.ID)
	}
	c.quiet(t, 300*time.Millisecond)
	more := e.send(4, false)
	sameRecords(t, c.next(t, len(only(more, "a"))), only(more, "a"))
}

// BenchmarkLiveLatency measures the time from a record's write to
// pulse.segments (acknowledged) to its arrival on each of 20 SSE streams,
// with records written at about 5000/s.
func BenchmarkLiveLatency(b *testing.B) {
	e := newLiveEnv(b)
	url, stop := e.start(scorer.LiveOptions{Backfill: -1})
	defer stop()
	const subscribers = 20
	var clients []*sseClient
	for range subscribers {
		clients = append(clients, connect(b, url+"/v1/segments/live?api_key=rk", ""))
	}
	plain, err := kafka.NewClient(e.cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		b.Fatal(err)
	}
	defer plain.Close()
	acked := make([]time.Time, b.N)
	var mu sync.Mutex
	b.ResetTimer()
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; i < b.N; {
			<-tick.C
			for j := 0; j < 5 && i < b.N; j, i = j+1, i+1 {
				rec := segment.Record{ID: fmt.Sprint(i), Segment: "a", Entity: "user", EntityID: fmt.Sprint(i % 1000), Change: "enter", At: time.Now()}
				v, _ := json.Marshal(rec)
				n := i
				plain.Produce(context.Background(), &kgo.Record{Topic: e.cfg.Kafka.Topics.Segments, Key: []byte(rec.EntityID), Value: v}, func(*kgo.Record, error) {
					mu.Lock()
					acked[n] = time.Now()
					mu.Unlock()
				})
			}
		}
	}()
	// Every stream is read at once, as independent clients would.
	lats := make([][]time.Duration, len(clients))
	var wg sync.WaitGroup
	for k, c := range clients {
		wg.Go(func() {
			for range b.N {
				ev, ok := <-c.C
				if !ok {
					return
				}
				now := time.Now()
				var i int
				fmt.Sscan(ev.Rec.ID, &i)
				mu.Lock()
				at := acked[i]
				mu.Unlock()
				if !at.IsZero() {
					lats[k] = append(lats[k], now.Sub(at))
				}
			}
		})
	}
	wg.Wait()
	var lat []time.Duration
	for _, l := range lats {
		lat = append(lat, l...)
	}
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
}
