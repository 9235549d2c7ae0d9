package webtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pulse-rt/pulse/importer"
	"github.com/pulse-rt/pulse/scorer"
)

// TestDashboardImport drops a real CSV file on the dashboard's Import page
// in headless Chromium, served by the real scorer with the importer's API:
// the page shows the first rows and the guessed mapping, the test fixes
// it as a marketer would (the event's name, revenue's field), imports,
// and sees the progress end with the counts and the refused row's reason;
// the stream then puts the imported orders into the features and
// segments the page shows.
func TestDashboardImport(t *testing.T) {
	browser := chromium(t)
	st := newStack(t, nil)
	cfg, log := st.cfg, st.log
	web, err := importer.NewWeb(st.ctx, st.producer, importer.Options{Events: cfg.Kafka.Topics.Events, Invalid: cfg.Kafka.Topics.Invalid})
	if err != nil {
		t.Fatal(err)
	}
	live := scorer.NewLive(cfg, scorer.LiveOptions{Log: log})
	srv, err := scorer.New(cfg, st.store, scorer.WithLive(live), scorer.WithImport(web), scorer.WithLogger(log), scorer.WithDashboardKey("dev-read-key"))
	if err != nil {
		t.Fatal(err)
	}
	ln := st.listen()
	st.run(live.Run, func(ctx context.Context) error { return srv.Serve(ctx, ln) })

	// A shop's orders export: row 2 has no customer.
	at := time.Now().UTC().Add(-time.Hour).Format("2006-01-02 15:04:05")
	csvPath := filepath.Join(t.TempDir(), "orders.csv")
	orders := "order_id,customer_id,total,created_at\n" +
		"o1,c1,640," + at + "\n" + "o2,,5," + at + "\n" + "o3,c2,20," + at + "\n" + "o4,c1,30," + at + "\n"
	if err := os.WriteFile(csvPath, []byte(orders), 0o644); err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, browser)
	defer b.close()
	b.open("http://" + ln.Addr().String() + "/")
	b.waitText(`[data-segment="big_spenders"] .count`, "0")
	b.do(chromedp.SetValue(chromedp.CSS("#import-key"), "dev-write-key"),
		chromedp.SetUploadFiles(chromedp.CSS("#import-file"), []string{csvPath}))
	b.waitContains("#import-rows", "o3c220")
	b.waitContains("#import-file-name", "orders.csv: the first 4 rows")
	value := func(sel string) string {
		t.Helper()
		got, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](fmt.Sprintf(`(function(){var e=document.querySelector(%q);return e?e.value:"<none>";})()`, sel)))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	for sel, want := range map[string]string{
		`.map-source[data-field="userId"]`:              "customer_id",
		`.map-source[data-field="timestamp"]`:           "created_at",
		`.map-source[data-field="event"]`:               `"Imported"`,
		`.map-source[data-field="properties.total"]`:    "total",
		`.map-source[data-field="properties.order_id"]`: "order_id",
		`#import-time-format`:                           "", // "2026-12-01 10:00:00" reads as ISO-8601
	} {
		if got := value(sel); got != want {
			t.Errorf("guessed %s = %q, want %q", sel, got, want)
		}
	}
	// Fix it: the event's name, and total is the revenue.
	b.do(chromedp.SetValue(chromedp.CSS(`.map-source[data-field="event"]`), `"Order Completed"`),
		chromedp.Evaluate[chromedp.Void](`(function(){var s=document.querySelector('.map-source[data-field="properties.total"]');s.closest('tr').querySelector('.map-field').value='properties.revenue';})()`),
		chromedp.Click(chromedp.CSS("#import-go")))
	b.waitText("#import-progress", "Done: 4 rows, 3 imported, 1 refused")
	b.waitContains("#import-report-table", "2customer_iduserId or anonymousId is required")

	// The imported orders, counted by the stream: c1 spent 670 in the
	// last 30 days.
	b.waitText(`[data-segment="big_spenders"] .count`, "1")
	b.lookupUntil("c1", `.profile[data-user="c1"] .pill-seg`, "Big spenders")
	b.waitContains(`.profile[data-user="c1"] .features`, "$670.00")
}
