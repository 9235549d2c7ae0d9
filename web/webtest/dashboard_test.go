// Package webtest drives the dashboard in a real headless Chromium against
// a stand-in for the scorer API whose live feed is the real scorer.Live
// reading an in-process Kafka (kfake).
package webtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/segment"
	"github.com/pulse-rt/pulse/web"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

const testConfig = `
keys:
  - name: reader
    key: rk
    scopes: [read]
segments:
  - name: big_spenders
    description: Spent over $500 in the last 30 days
    rule: 'revenue_30d > 500'
  - name: active_shoppers
    description: Viewed 3 or more products in the last hour
    rule: 'products_viewed_1h >= 3'
  - name: cart_abandoners
    description: Added to cart today but no order in 24 hours
    rule: 'cart_adds_24h > 0 && orders_24h == 0'
`

// fakeScorer answers the scorer API from memory, except the live feed.
type fakeScorer struct {
	cfg     *config.Config
	live    *scorer.Live
	static  fasthttp.RequestHandler
	mu      sync.Mutex
	members map[string][]string
	noKey   bool // no dev key in /v1/dashboard/config, as outside `pulse dev`
	// history is what GET /v1/segments?history= reports, sampled since
	// historySince (unix ms); historyAsked counts the requests for it.
	history      map[string][][2]int64
	historySince int64
	historyAsked int
}

// serve answers on a local port until the test ends and returns the
// dashboard's URL.
func (f *fakeScorer) serve(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: f.handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return "http://" + ln.Addr().String() + "/"
}

func (f *fakeScorer) setMembers(seg string, ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members[seg] = ids
}

func (f *fakeScorer) handler(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	if path == "/v1/dashboard/config" {
		// As the real scorer in `pulse dev`: the key only to the page's
		// own same-origin fetch (scorer.WithDashboardKey).
		ctx.SetContentType("application/json")
		f.mu.Lock()
		noKey := f.noKey
		f.mu.Unlock()
		if noKey || string(ctx.Request.Header.Peek("Sec-Fetch-Site")) != "same-origin" {
			ctx.SetBodyString(`{"models":["purchase_propensity"]}`)
			return
		}
		ctx.SetBodyString(`{"readKey":"rk","models":["purchase_propensity"]}`)
		return
	}
	if strings.HasPrefix(path, "/v1/") && path != "/v1/segments/live" && path != "/v1/predict" &&
		string(ctx.Request.Header.Peek("Authorization")) != "Bearer rk" {
		ctx.SetStatusCode(401)
		ctx.SetBodyString(`{"success":false,"error":"unknown API key"}`)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	writeJSON := func(v any) {
		b, _ := json.Marshal(v)
		ctx.SetContentType("application/json")
		ctx.SetBody(b)
	}
	switch {
	case path == "/config.js":
		// Never the key: any site may include a script.
		ctx.SetContentType("text/javascript")
		ctx.SetBodyString(`window.PULSE_CONFIG = {"models":["purchase_propensity"]};`)
	case path == "/v1/segments/live":
		if f.live == nil {
			ctx.SetStatusCode(503)
			ctx.SetBodyString(`{"success":false,"error":"the live segment feed is not running on this scorer"}`)
			return
		}
		f.live.ServeSSE(ctx)
	case path == "/v1/segments":
		withHistory := ctx.QueryArgs().Has("history")
		if withHistory {
			f.historyAsked++
		}
		var segs []map[string]any
		for _, s := range f.cfg.Segments {
			seg := map[string]any{"name": s.Name, "description": s.Description, "entity": "user", "rule": s.Rule, "members": len(f.members[s.Name])}
			if withHistory {
				seg["history"] = append([][2]int64{}, f.history[s.Name]...)
				// As the real scorer: a segment it has not sampled has no
				// points, known from now on.
				seg["history_since"] = f.historySince
				if f.historySince == 0 {
					seg["history_since"] = time.Now().UnixMilli()
				}
			}
			segs = append(segs, seg)
		}
		writeJSON(map[string]any{"segments": segs})
	case strings.HasSuffix(path, "/members"):
		name := strings.TrimSuffix(strings.TrimPrefix(path, "/v1/segments/"), "/members")
		writeJSON(map[string]any{"segment": name, "entity": "user", "members": f.members[name], "next_cursor": ""})
	case strings.HasPrefix(path, "/v1/profiles/user/"):
		id := strings.TrimPrefix(path, "/v1/profiles/user/")
		if id != "612" && id != "anon-9" {
			ctx.SetStatusCode(404)
			ctx.SetBodyString(`{"success":false,"error":"no such entity"}`)
			return
		}
		now := time.Now().UTC()
		writeJSON(map[string]any{"entity": "user", "id": id, "canonical_id": "612", "updated_at": now,
			"segments": []string{"big_spenders"},
			"features": map[string]any{"revenue_30d": 742.5, "orders_30d": 3, "products_viewed_1h": 2, "country": "GB", "recent_categories": []string{"Shoes", "Books"}},
			"identities": []map[string]any{
				{"identifier": "anonymous_id:anon-9", "kind": "anonymous_id", "value": "anon-9", "linked_at": now.Add(-time.Hour), "message_id": "i1", "cause": "identify"},
				{"identifier": "user_id:612", "kind": "user_id", "value": "612", "linked_at": now.Add(-time.Hour), "message_id": "i1", "cause": "identify"}},
			"traits": map[string]any{"plan": "pro"},
			"events": []map[string]any{{"messageId": "m9", "type": "track", "event": "Order Completed", "userId": "612", "timestamp": now.Add(-time.Minute)}}})
	case path == "/v1/predict":
		writeJSON([]map[string]any{{"model_used": true, "prediction": "yes", "score": 0.83, "uuid": "u-1"}})
	default:
		f.static(ctx)
	}
}

func TestDashboardShowsLiveChanges(t *testing.T) {
	browser := chromium(t)
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	cfg, err := config.Parse([]byte(testConfig), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kafka.Brokers = emb.Addrs()
	cfg.Kafka.Partitions = 2
	producer, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	bg, cancelBg := context.WithCancel(context.Background())
	defer cancelBg()
	if err := kafka.EnsureTopics(bg, producer, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	live := scorer.NewLive(cfg, scorer.LiveOptions{Heartbeat: time.Second})
	go live.Run(bg)

	sub, _ := fs.Sub(web.Static, "static")
	fake := &fakeScorer{cfg: cfg, live: live, members: map[string][]string{
		"big_spenders":    {"101", "202"},
		"active_shoppers": {"7"},
	}, static: fasthttpadaptor.NewFastHTTPHandler(http.FileServerFS(sub))}
	url := fake.serve(t)

	produceReason := func(seg, id, change, reason string) {
		t.Helper()
		rec := segment.Record{ID: fmt.Sprintf("%s-%s-%s-%d", seg, id, change, time.Now().UnixNano()), Segment: seg, Entity: "user", EntityID: id, Change: change, At: time.Now().UTC(), Reason: reason}
		v, _ := json.Marshal(rec)
		if err := producer.ProduceSync(bg, &kgo.Record{Topic: cfg.Kafka.Topics.Segments, Key: []byte(id), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce := func(seg, id, change string) { t.Helper(); produceReason(seg, id, change, "") }

	b := newBrowser(t, browser)
	defer b.close()
	countOf := func(seg string) string { return fmt.Sprintf(`[data-segment=%q] .count`, seg) }

	// The page loads with the dev key from /v1/dashboard/config and shows the counts.
	b.open(url)
	b.waitText(countOf("big_spenders"), "2")
	b.waitText(countOf("active_shoppers"), "1")
	b.waitText(countOf("cart_abandoners"), "0")
	b.waitText("#status .status-text", "Live")

	// A customer enters big_spenders: the store has them and the topic says so.
	fake.setMembers("big_spenders", "101", "202", "612")
	produce("big_spenders", "612", "enter")
	b.waitText(countOf("big_spenders"), "3")
	b.waitText(`#feed .feed-item.enter[data-segment="big_spenders"] .linklike`, "User 612")
	// The page has watched for seconds, not an hour: the change is since it
	// opened, and it says so.
	b.waitContains(`[data-segment="big_spenders"] .delta`, "+1 since ")
	// And one leaves active_shoppers.
	fake.setMembers("active_shoppers")
	produce("active_shoppers", "7", "exit")
	b.waitText(countOf("active_shoppers"), "0")
	b.waitText(`#feed .feed-item.exit[data-segment="active_shoppers"] .linklike`, "User 7")
	b.waitText(`#feed .feed-item.exit[data-segment="active_shoppers"] .verb`, "left")
	// A customer deleted on request leaves its segments, and the feed says why.
	fake.setMembers("big_spenders", "101", "202")
	produceReason("big_spenders", "612", "exit", segment.ReasonDeleted)
	b.waitText(countOf("big_spenders"), "2")
	b.waitText(`#feed .feed-item.exit[data-reason="deleted"][data-segment="big_spenders"] .verb`, "was deleted from")
	fake.setMembers("big_spenders", "101", "202", "612") // back, for the lookups below
	feedLen, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelectorAll("#feed .feed-item").length`))
	if err != nil || feedLen != 3 {
		t.Fatalf("feed has %d items (%v), want 3", feedLen, err)
	}

	// Members of a segment, then a customer's profile with a prediction.
	b.do(chromedp.Click(chromedp.CSS(`[data-segment="big_spenders"].segment`)))
	b.waitText("#members-title", "Big spenders")
	b.waitText("#members-list li:last-child button", "User 612")
	b.do(chromedp.Click(chromedp.CSS("#members-list li:last-child button")))
	b.waitText(`.profile[data-user="612"] .prediction .label`, "yes")
	b.waitText(`.profile .pill-seg`, "Big spenders")

	b.waitText(`.profile[data-user="612"] [data-identifier="anonymous_id:anon-9"] strong`, "anon-9")
	b.waitContains(`.profile[data-user="612"] .traits`, "pro")
	b.waitContains(`.profile[data-user="612"] .recent-events [data-message="m9"]`, "Order Completed")
	// Looked up by another of the customer's ids: the same customer, and the page says so.
	b.lookupUntil("anon-9", `.profile[data-user="anon-9"][data-person="612"] .merged-note`, "anon-9 is one of this customer’s ids")

	// An unknown customer gets a polite empty state.
	b.lookupUntil("999", "#lookup-result .empty strong", "No customer with id “999” yet")

	// Back to a state worth a screenshot: a profile on screen.
	b.lookupUntil("612", `.profile[data-user="612"] .prediction .label`, "yes")
	// One at a time, each on top once it came: the three go to different
	// partitions, and the feed shows changes as they arrive (CI once saw
	// User 44's after User 58's when all three were sent at once).
	for i, id := range []string{"31", "44", "58"} {
		produce([]string{"cart_abandoners", "active_shoppers", "big_spenders"}[i], id, []string{"enter", "enter", "exit"}[i])
		b.waitText(`#feed .feed-item:first-child .linklike`, "User "+id)
	}

	// Outside `pulse dev` the page asks for a key once, refuses a wrong one
	// politely, and remembers a good one.
	fake.mu.Lock()
	fake.noKey = true
	fake.mu.Unlock()
	b.do(chromedp.Evaluate[chromedp.Void](`localStorage.clear()`), chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#key-input")))
	b.do(chromedp.SetValue(chromedp.CSS("#key-input"), "wrong"), chromedp.Click(chromedp.CSS("#key-form button")))
	b.waitText("#key-error", "Your key was not accepted. Please enter it again.")
	b.do(chromedp.SetValue(chromedp.CSS("#key-input"), "rk"), chromedp.Click(chromedp.CSS("#key-form button")))
	b.waitText(countOf("big_spenders"), "3")
	b.do(chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(countOf("big_spenders"))))
	b.waitText(countOf("big_spenders"), "3")
	b.waitText("#status .status-text", "Live")

	// A page that knows the count from over an hour ago (its saved history)
	// shows the change over the hour. The history is planted before the
	// page's script runs, so no save of the old page can overwrite it.
	hist := fmt.Sprintf(`localStorage.setItem('pulse.segmentHistory.v1', JSON.stringify({big_spenders: [[%d, 1]]}))`,
		time.Now().Add(-2*time.Hour).UnixMilli())
	if _, err := chromedp.Call(b.ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: hist}); err != nil {
		t.Fatal(err)
	}
	b.do(chromedp.Navigate(url))
	b.waitText(countOf("big_spenders"), "3")
	b.waitText(`[data-segment="big_spenders"] .delta`, "+2 in 1h")
}

// TestDashboardShowsServerHistory opens the dashboard for the first time
// (nothing in local storage) on a scorer that has sampled the counts for
// over an hour: the change reads over the hour and the sparkline starts at
// the hour's left edge, where the page alone would know neither.
func TestDashboardShowsServerHistory(t *testing.T) {
	browser := chromium(t)
	cfg, err := config.Parse([]byte(testConfig), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var ids []string
	for i := range 25 {
		ids = append(ids, fmt.Sprint(100+i))
	}
	sub, _ := fs.Sub(web.Static, "static")
	fake := &fakeScorer{cfg: cfg, members: map[string][]string{"big_spenders": ids},
		static: fasthttpadaptor.NewFastHTTPHandler(http.FileServerFS(sub)),
		history: map[string][][2]int64{"big_spenders": {
			{now.Add(-75 * time.Minute).UnixMilli(), 10},
			{now.Add(-40 * time.Minute).UnixMilli(), 18},
			{now.Add(-5 * time.Minute).UnixMilli(), 25},
		}},
		historySince: now.Add(-3 * time.Hour).UnixMilli(),
	}
	url := fake.serve(t)

	b := newBrowser(t, browser)
	defer b.close()
	b.open(url)
	b.waitText(`[data-segment="big_spenders"] .count`, "25")
	b.waitText(`[data-segment="big_spenders"] .delta`, "+15 in 1h")
	line, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector('[data-segment="big_spenders"] .spark polyline').getAttribute('points')`))
	if err != nil || !strings.HasPrefix(line, "0.00,") || len(strings.Fields(line)) < 6 {
		t.Errorf("sparkline %q (%v): want the hour's three counts from the left edge", line, err)
	}
	fake.mu.Lock()
	asked := fake.historyAsked
	fake.mu.Unlock()
	if asked == 0 {
		t.Error("the page never asked for ?history=")
	}
}
