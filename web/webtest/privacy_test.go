package webtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/suppression"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestDashboardPrivacy handles a customer's privacy requests on the
// dashboard in headless Chromium, as a support agent would, against the
// real scorer over the example's stream (identity on): the export by the
// customer's browsing id shows the person it was merged into, its ids and
// segments, and offers the file; the deletion, asked and confirmed, is
// followed in the Deletions table until done, and the customer is gone
// from the segment counts and the lookup while another stays; deleted
// with suppression, its ids are listed as suppressed, and one is lifted.
func TestDashboardPrivacy(t *testing.T) {
	browser := chromium(t)
	st := newStack(t, nil)
	cfg, log := st.cfg, st.log
	ids := scorer.NewIdentities(cfg, log)
	dels := scorer.NewDeletions(cfg, log)
	sup := suppression.New(cfg, log, nil)
	live := scorer.NewLive(cfg, scorer.LiveOptions{Log: log})
	srv, err := scorer.New(cfg, st.store, scorer.WithLive(live), scorer.WithIdentities(ids), scorer.WithDeletions(st.producer),
		scorer.WithDeletionStatus(dels), scorer.WithSuppressionList(sup), scorer.WithLogger(log), scorer.WithDashboardKey("dev-read-key"))
	if err != nil {
		t.Fatal(err)
	}
	ln := st.listen()
	st.run(live.Run, ids.Run, dels.Run, sup.Run, func(ctx context.Context) error { return srv.Serve(ctx, ln) })

	// A shopper who browsed anonymously, logged in and ordered; another.
	now := time.Now().UTC()
	var recs []*kgo.Record
	for _, ev := range []event.Event{
		{Type: event.Track, Event: "Product Viewed", AnonymousID: "anon-1", MessageID: "v1", Properties: map[string]any{"product_id": "p1"}},
		{Type: event.Identify, AnonymousID: "anon-1", UserID: "612", MessageID: "i1", Traits: map[string]any{"email": "jo@example.com"}},
		{Type: event.Track, Event: "Order Completed", UserID: "612", MessageID: "o1", Properties: map[string]any{"revenue": 600}},
		{Type: event.Track, Event: "Order Completed", UserID: "777", MessageID: "o2", Properties: map[string]any{"revenue": 700}},
	} {
		ev.Timestamp, ev.ReceivedAt = now, now
		b, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: cfg.Kafka.Topics.Events, Key: []byte(ev.EntityID()), Value: b})
	}
	if err := st.producer.ProduceSync(st.ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, browser)
	defer b.close()
	b.open("http://" + ln.Addr().String() + "/")
	b.waitText(`[data-segment="big_spenders"] .count`, "2")
	if got := b.text("#privacy-deletions-empty"); !strings.Contains(got, "admin key") {
		t.Errorf("before a key: %q", got)
	}

	// The export, asked by the browsing id.
	b.do(chromedp.SetValue(chromedp.CSS("#privacy-key"), "dev-admin-key"), chromedp.SetValue(chromedp.CSS("#privacy-id"), "anon-1"))
	b.settle()
	b.do(chromedp.Click(chromedp.CSS("#privacy-export")))
	b.waitContains("#privacy-result", "Customer 612: a live profile")
	for _, want := range []string{"anonymous_id:anon-1", "email:jo@example.com", "user_id:612", "big_spenders"} {
		b.waitContains("#privacy-export-summary", want)
	}
	href, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`(function(){var a=document.getElementById('privacy-download');return a?a.href+' '+a.download:'';})()`))
	if err != nil || !strings.HasPrefix(href, "blob:") || !strings.HasSuffix(href, " pulse-export-612.jsonl") {
		t.Errorf("the download link: %q %v", href, err)
	}

	// The deletion: asked, confirmed, followed until done.
	b.settle()
	b.do(chromedp.Click(chromedp.CSS("#privacy-delete")), chromedp.WaitVisible(chromedp.CSS("#privacy-confirm")))
	b.waitContains("#privacy-confirm", "Delete anon-1 and everything")
	b.do(chromedp.Click(chromedp.CSS("#privacy-suppress")), chromedp.Click(chromedp.CSS("#privacy-confirm-go")))
	b.waitContains("#privacy-deleted", "Deletion requested")
	b.waitContains("#privacy-deleted", "user_id:612")
	b.waitContains("#privacy-deletions .status-done", "done")
	b.waitContains("#privacy-deletions", "user id, suppressed")
	// Suppressed: its entity ids listed; one lifted, as for a customer who
	// came back.
	b.waitContains(`#privacy-suppressed tr[data-id="612"]`, "612")
	b.waitContains(`#privacy-suppressed tr[data-id="anon-1"]`, "anon-1")
	b.settle()
	b.do(chromedp.Click(chromedp.CSS(`#privacy-suppressed tr[data-id="612"] .lift`)))
	b.wait("#privacy-suppressed", "612's row gone, anon-1's kept", func(s string) bool {
		return !strings.Contains(s, "612") && strings.Contains(s, "anon-1")
	})
	b.waitText(`[data-segment="big_spenders"] .count`, "1")
	b.lookupUntil("612", "#lookup-result", "No customer with id")
	b.lookupUntil("777", `.profile[data-user="777"] .pill-seg`, "Big spenders")
	b.screenshot("privacy")
}
