package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePipeline is an ingest that "processes" each probe a fixed delay
// after answering: its store write and its segment enter come lag after
// the 200, and the expiry exit lateExit after its window ends.
type fakePipeline struct {
	lag, lateExit time.Duration

	mu      sync.Mutex
	written map[string]time.Time
	events  int
	feed    chan string // SSE data lines
}

func newFakePipeline(t *testing.T, lag, lateExit time.Duration) (*fakePipeline, *httptest.Server) {
	f := &fakePipeline{lag: lag, lateExit: lateExit, written: map[string]time.Time{}, feed: make(chan string, 100_000)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/batch", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Batch []struct {
				UserID string `json:"userId"`
				Event  string `json:"event"`
			} `json:"batch"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		now := time.Now()
		f.mu.Lock()
		f.events += len(body.Batch)
		for _, e := range body.Batch {
			if e.Event != ProbeEvent {
				continue
			}
			f.written[e.UserID] = now.Add(f.lag)
			user := e.UserID
			time.AfterFunc(f.lag, func() {
				f.feed <- fmt.Sprintf(`{"segment":"in","id":%q,"change":"enter","at":%q}`, user, now.Format(time.RFC3339Nano))
			})
			expiry := now.Add(time.Second)
			time.AfterFunc(time.Second+f.lateExit, func() {
				f.feed <- fmt.Sprintf(`{"segment":"recent","id":%q,"change":"exit","at":%q}`, user, expiry.Format(time.RFC3339Nano))
			})
		}
		f.mu.Unlock()
		io.WriteString(w, `{"success":true}`)
	})
	mux.HandleFunc("GET /v1/segments/live", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("api_key") != "rk" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case d := <-f.feed:
				fmt.Fprintf(w, "id: x\nevent: change\ndata: %s\n\n", d)
				w.(http.Flusher).Flush()
			}
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakePipeline) writtenAt(user string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.written[user]
	if ok && time.Now().Before(at) {
		return time.Time{}, false
	}
	return at, ok
}

func TestFreshnessMeasuresFromTheAck(t *testing.T) {
	f, srv := newFakePipeline(t, 30*time.Millisecond, 0)
	var out bytes.Buffer
	rep, err := Freshness(context.Background(), FreshnessOptions{URL: srv.URL, WriteKey: "wk", Rate: 2000, Batch: 20,
		Duration: time.Second, Warmup: 200 * time.Millisecond, Users: 100, WrittenAt: f.writtenAt}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if rep.Probes < 90 || rep.Missing != 0 || rep.FromAck.TotalCount() != rep.Probes {
		t.Fatalf("probes %d, missing %d, measured %d", rep.Probes, rep.Missing, rep.FromAck.TotalCount())
	}
	// The fake writes 30ms after it began its answer: the client gets
	// the answer after that moment and sent the request before it, so
	// however busy the machine, from the ack is at most 30ms and from the
	// send at least 30ms (to the histograms' 3 digits).
	const lag = 30 * time.Millisecond
	if max := time.Duration(rep.FromAck.Max()) * time.Microsecond; max > lag+lag/100 {
		t.Errorf("from the ack: max %s, want at most 30ms", max)
	}
	if min := time.Duration(rep.FromSend.Min()) * time.Microsecond; min < lag-lag/100 {
		t.Errorf("from the send: min %s, want at least 30ms", min)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.events < 2000 {
		t.Errorf("ingest got %d events, want about 2400", f.events)
	}
}

func TestSegmentsMeasuresEntersAndExpiries(t *testing.T) {
	_, srv := newFakePipeline(t, 20*time.Millisecond, 100*time.Millisecond)
	var out bytes.Buffer
	rep, err := Segments(context.Background(), SegmentsOptions{URL: srv.URL, WriteKey: "wk", ScorerURL: srv.URL, ReadKey: "rk",
		Enter: "in", Expire: "recent", Rate: 1000, Batch: 10, Duration: time.Second, Warmup: 200 * time.Millisecond, Users: 100,
		Linger: 3 * time.Second}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if rep.Probes < 90 || rep.MissingEnters != 0 || rep.MissingExits != 0 {
		t.Fatalf("probes %d, missing enters %d, exits %d", rep.Probes, rep.MissingEnters, rep.MissingExits)
	}
	// Every enter is measured; the fake sends each exit 100ms after the
	// window ended (timers never fire early), so no lateness is less. The
	// upper bound is only the linger: how late a timer fires depends on
	// the machine.
	if n := rep.Enter.TotalCount(); n != int64(rep.Probes) {
		t.Errorf("%d enters measured of %d probes", n, rep.Probes)
	}
	if min := time.Duration(rep.Exit.Min()) * time.Microsecond; min < 99*time.Millisecond {
		t.Errorf("exit lateness min %s, want at least 100ms", min)
	}
	if p50 := time.Duration(rep.Exit.ValueAtQuantile(50)) * time.Microsecond; p50 > 3*time.Second {
		t.Errorf("exit lateness p50 %s, past the 3s linger", p50)
	}
	if !strings.Contains(out.String(), "window expiry -> SSE exit") {
		t.Errorf("no expiry line in:\n%s", out.String())
	}
}
