package scorer_test

import (
	"errors"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/scorer"
)

// TestSegmentHistory watches a segment's count move while the server
// samples it, through GET /v1/segments?history=.
func TestSegmentHistory(t *testing.T) {
	st := newMemStore()
	opened := time.Now().UnixMilli()
	h := start(t, newConfig(t, testConfig), st, scorer.WithHistoryInterval(20*time.Millisecond))

	list := func(path string) map[string]scorer.SegmentHistory {
		t.Helper()
		code, body := h.do("GET", path, "read-key", "")
		var got struct{ Segments []scorer.SegmentHistory }
		if err := json.Unmarshal([]byte(body), &got); code != 200 || err != nil {
			t.Fatalf("GET %s: %d %s %v", path, code, body, err)
		}
		out := map[string]scorer.SegmentHistory{}
		for _, s := range got.Segments {
			out[s.Name] = s
		}
		return out
	}
	// waitLast waits for the sampler to have seen big_spenders at n.
	waitLast := func(n int64) {
		t.Helper()
		var pts [][2]int64
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			pts = list("/v1/segments?history=1h")["big_spenders"].History
			if len(pts) > 0 && pts[len(pts)-1][1] == n {
				return
			}
		}
		t.Fatalf("big_spenders history never reached %d: %v", n, pts)
	}
	waitLast(0)
	seed(t, st, map[string]map[string]any{"1": buyer()}, map[string][]string{"1": {"big_spenders"}})
	waitLast(1)
	seed(t, st, map[string]map[string]any{"2": buyer(), "3": buyer()}, map[string][]string{"2": {"big_spenders"}, "3": {"big_spenders"}})
	waitLast(3)

	segs := list("/v1/segments?history=1h")
	big := segs["big_spenders"]
	if big.Members != 3 || big.HistorySince < opened || big.HistorySince > big.History[0][0] {
		t.Errorf("big_spenders: members %d, history_since %d (opened %d), first point %v", big.Members, big.HistorySince, opened, big.History[0])
	}
	var counts []int64
	for i, p := range big.History {
		if i > 0 && p[0] <= big.History[i-1][0] {
			t.Errorf("points out of order: %v", big.History)
		}
		counts = append(counts, p[1])
	}
	// A point is kept when the count changes, not at every sample.
	if !slices.Equal(counts, []int64{0, 1, 3}) {
		t.Errorf("big_spenders counts %v, want [0 1 3]: %v", counts, big.History)
	}
	if carts := segs["carts"]; len(carts.History) != 1 || carts.History[0][1] != 0 {
		t.Errorf("carts held at 0 for under a minute: want one point, got %v", carts.History)
	}
	if one := list("/v1/segments?history=15m")["big_spenders"]; !slices.Equal(one.History, big.History) {
		t.Errorf("history=15m: %v, want %v", one.History, big.History)
	}
	code, body := h.do("GET", "/v1/segments/big_spenders?history=30m", "read-key", "")
	var one scorer.SegmentHistory
	if err := json.Unmarshal([]byte(body), &one); code != 200 || err != nil || len(one.History) != 3 || one.Members != 3 {
		t.Errorf("one segment with history: %d %s %v", code, body, err)
	}

	// Without the parameter the answer is as it always was.
	for _, path := range []string{"/v1/segments", "/v1/segments/big_spenders"} {
		if code, body := h.do("GET", path, "read-key", ""); code != 200 || strings.Contains(body, `"history`) {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}

	f := func(path string) {
		t.Helper()
		code, body := h.do("GET", path, "read-key", "")
		var e struct {
			Success *bool
			Error   string
		}
		if err := json.Unmarshal([]byte(body), &e); code != 400 || err != nil || e.Success == nil || *e.Success ||
			!strings.HasPrefix(e.Error, "history: want a duration from 1s to 1h") {
			t.Errorf("GET %s: got %d %s, want 400 naming history", path, code, body)
		}
	}
	f("/v1/segments?history=2h")
	f("/v1/segments?history=1d")
	f("/v1/segments?history=0")
	f("/v1/segments?history=-5m")
	f("/v1/segments?history=500ms")
	f("/v1/segments?history=")
	f("/v1/segments/big_spenders?history=soon")

	// A store that fails is counted and the sampler carries on after it.
	before := testenv.Gathered(t, "pulse_scorer_segment_history_errors_total", nil)
	st.fail(errors.New("store down"))
	for deadline := time.Now().Add(10 * time.Second); testenv.Gathered(t, "pulse_scorer_segment_history_errors_total", nil) == before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("store errors not counted")
		}
	}
	st.fail(nil)
	seed(t, st, map[string]map[string]any{"4": buyer()}, map[string][]string{"4": {"big_spenders"}})
	waitLast(4)
}

// TestSegmentHistoryReload picks up a segment a config reload adds and
// forgets one it removes: back in a later reload, it starts afresh.
func TestSegmentHistoryReload(t *testing.T) {
	cfg := newConfig(t, testConfig)
	path := filepath.Join(cfg.Dir, "pulse.yaml")
	h := start(t, cfg, newMemStore(), scorer.WithConfigPath(path), scorer.WithHistoryInterval(20*time.Millisecond))
	get := func(name string) (scorer.SegmentHistory, bool) {
		t.Helper()
		code, body := h.do("GET", "/v1/segments?history=1h", "read-key", "")
		var got struct{ Segments []scorer.SegmentHistory }
		if err := json.Unmarshal([]byte(body), &got); code != 200 || err != nil {
			t.Fatalf("%d %s %v", code, body, err)
		}
		for _, s := range got.Segments {
			if s.Name == name {
				return s, true
			}
		}
		return scorer.SegmentHistory{}, false
	}
	wait := func(name string) scorer.SegmentHistory {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if s, ok := get(name); ok && len(s.History) > 0 {
				return s
			}
		}
		t.Fatalf("%s never sampled", name)
		return scorer.SegmentHistory{}
	}
	reload := func(yaml string) {
		t.Helper()
		writeFile(t, path, yaml)
		if _, err := h.srv.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	first := wait("carts")
	withoutCarts := strings.Replace(testConfig, "  - {name: carts, rule: 'cart_adds_24h > 0'}", "  - {name: browsers, rule: 'products_viewed_24h > 0'}", 1)
	reload(withoutCarts)
	wait("browsers")
	if _, ok := get("carts"); ok {
		t.Fatal("carts still listed after the reload removed it")
	}
	// Sampled since the reload: the round that saw browsers dropped carts.
	readded := time.Now().UnixMilli()
	reload(testConfig)
	if again := wait("carts"); again.HistorySince < readded || again.HistorySince <= first.HistorySince {
		t.Errorf("carts re-added: history_since %d, want from the re-adding reload (%d) on", again.HistorySince, readded)
	}
}

// TestSegmentHistoryStopsWithServe: the sampler ends before Serve returns.
func TestSegmentHistoryStopsWithServe(t *testing.T) {
	srv, err := scorer.New(newConfig(t, testConfig), newMemStore(), scorer.WithHistoryInterval(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	_, stop := serve(t, srv)
	time.Sleep(20 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "scorer.(*Server).sample") {
		t.Errorf("the sampler outlived Serve:\n%s", stacks)
	}
}
