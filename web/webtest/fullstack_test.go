package webtest

import (
	"context"
	"fmt"
	"testing"

	"github.com/pulse-rt/pulse/ingest"
	"github.com/pulse-rt/pulse/scorer"
)

// TestDashboardFullStack posts events to the real ingest API and watches
// the dashboard, served by the real scorer, follow: the stream computes the
// features and segments on kfake and Pebble, the live feed streams the
// changes, the page's counts and feed move.
func TestDashboardFullStack(t *testing.T) {
	browser := chromium(t)
	st := newStack(t, nil)
	cfg, log := st.cfg, st.log
	ingestLn, scorerLn := st.listen(), st.listen()
	live := scorer.NewLive(cfg, scorer.LiveOptions{Log: log})
	ids := scorer.NewIdentities(cfg, log)
	srv, err := scorer.New(cfg, st.store, scorer.WithLive(live), scorer.WithLogger(log), scorer.WithDashboardKey("dev-read-key"), scorer.WithIdentities(ids))
	if err != nil {
		t.Fatal(err)
	}
	st.run(
		func(ctx context.Context) error { return ingest.New(cfg, st.producer, log).Serve(ctx, ingestLn) },
		live.Run,
		ids.Run,
		func(ctx context.Context) error { return srv.Serve(ctx, scorerLn) },
	)
	ingestURL := "http://" + ingestLn.Addr().String()
	post := func(events ...string) { t.Helper(); st.post(ingestURL, events...) }
	track := func(user, name, props string) string {
		return fmt.Sprintf(`{"type":"track","userId":%q,"event":%q,"properties":%s}`, user, name, props)
	}

	b := newBrowser(t, browser)
	defer b.close()
	b.open("http://" + scorerLn.Addr().String() + "/")
	b.waitText(`[data-segment="big_spenders"] .count`, "0")
	b.waitText("#status .status-text", "Live")

	post(track("612", "Order Completed", `{"revenue":640,"order_id":"o1"}`))
	b.waitText(`[data-segment="big_spenders"] .count`, "1")
	b.waitText(`[data-segment="new_buyers"] .count`, "1")
	b.waitText(`#feed .feed-item.enter[data-segment="big_spenders"] .linklike`, "User 612")

	post(track("77", "Product Viewed", `{"product_id":"p1","category":"Shoes"}`),
		track("77", "Product Viewed", `{"product_id":"p2","category":"Shoes"}`),
		track("77", "Product Viewed", `{"product_id":"p3","category":"Books"}`))
	b.waitText(`[data-segment="active_shoppers"] .count`, "1")
	b.waitText(`#feed .feed-item.enter[data-segment="active_shoppers"] .linklike`, "User 77")

	// The customer's profile comes from the online store.
	b.lookupUntil("612", `.profile[data-user="612"] .pill-seg`, "Big spenders")
	b.waitContains(`.profile[data-user="612"] .features`, "$640.00")

	// A shopper browses anonymously, then logs in as 612: looked up by the
	// anonymous id, the dashboard shows customer 612 with both ids, and the
	// anonymous browsing counts for 612.
	anon := func(id, name, props string) string {
		return fmt.Sprintf(`{"type":"track","anonymousId":%q,"event":%q,"properties":%s}`, id, name, props)
	}
	post(anon("anon-612", "Product Viewed", `{"product_id":"p7","category":"Toys"}`),
		anon("anon-612", "Product Viewed", `{"product_id":"p8","category":"Toys"}`))
	post(`{"type":"identify","userId":"612","anonymousId":"anon-612","traits":{"country":"FR"}}`)
	b.lookupUntil("anon-612", `.profile[data-person="612"] .features`, "Toys") // recent_categories: the anonymous views
	b.lookupUntil("anon-612", `.profile[data-person="612"] [data-identifier="anonymous_id:anon-612"]`, "anon-612")
	b.waitContains(`.profile[data-user="anon-612"] .merged-note`, "anon-612 is one of this customer’s ids")
	b.waitContains(`.profile[data-person="612"] .features`, "$640.00")
}
