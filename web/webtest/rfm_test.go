package webtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/ingest"
	"github.com/pulse-rt/pulse/scorer"
)

// TestDashboardRFM: the e-commerce example (its rfm block refreshed every
// second) on the real ingest, stream (kfake, Pebble) and scorer; orders
// posted to ingest fill the dashboard's R × F grid, and a lapsed
// customer's new order moves them to another cell, shown in the grid and
// as a movement between groups.
func TestDashboardRFM(t *testing.T) {
	browser := chromium(t)
	st := newStack(t, func(cfg *config.Config) { cfg.RFM.Refresh = config.Duration(time.Second) })
	cfg, log := st.cfg, st.log
	ingestLn, scorerLn := st.listen(), st.listen()
	live := scorer.NewLive(cfg, scorer.LiveOptions{Log: log})
	view := scorer.NewRFMView(cfg, log)
	srv, err := scorer.New(cfg, st.store, scorer.WithLive(live), scorer.WithRFM(view), scorer.WithLogger(log), scorer.WithDashboardKey("dev-read-key"))
	if err != nil {
		t.Fatal(err)
	}
	st.run(
		func(ctx context.Context) error { return ingest.New(cfg, st.producer, log).Serve(ctx, ingestLn) },
		live.Run,
		view.Run,
		func(ctx context.Context) error { return srv.Serve(ctx, scorerLn) },
	)
	ingestURL, scorerURL := "http://"+ingestLn.Addr().String(), "http://"+scorerLn.Addr().String()
	now := time.Now().UTC()
	order := func(user string, daysAgo int, revenue float64) string {
		at := now.Add(-time.Duration(daysAgo) * 24 * time.Hour).Format(time.RFC3339Nano)
		return fmt.Sprintf(`{"type":"track","userId":%q,"event":"Order Completed","timestamp":%q,"properties":{"revenue":%g}}`, user, at, revenue)
	}
	post := func(events ...string) { t.Helper(); st.post(ingestURL, events...) }
	// Twenty buyers, oldest orders first; lapsed is one order 300 days ago.
	var batch []string
	for u := range 20 {
		for k := u % 4; k >= 0; k-- {
			batch = append(batch, order(fmt.Sprintf("b%d", u), u*9+k*20, float64(20+u*10)))
		}
	}
	batch = append(batch, order("lapsed", 300, 35))
	post(batch...)

	cell := func(id string) (r, f int, group string) {
		t.Helper()
		var v struct {
			Features map[string]any `json:"features"`
		}
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			req, _ := http.NewRequest("GET", scorerURL+"/v1/entities/user/"+id, nil)
			req.Header.Set("Authorization", "Bearer dev-read-key")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			if rr, ok := v.Features["rfm_r"].(float64); ok {
				return int(rr), int(v.Features["rfm_f"].(float64)), v.Features["rfm_group"].(string)
			}
		}
		t.Fatalf("%s never got RFM scores: %v", id, v.Features)
		return
	}
	r0, f0, g0 := cell("lapsed")

	b := newBrowser(t, browser)
	defer b.close()
	b.open(scorerURL + "/")
	atLeastOne := func(s string) bool {
		n, err := strconv.Atoi(strings.ReplaceAll(s, ",", ""))
		return err == nil && n >= 1
	}
	sel := func(r, f int) string { return fmt.Sprintf(`#rfm-grid td[data-r="%d"][data-f="%d"] .n`, r, f) }
	b.wait(sel(r0, f0), "at least one buyer", atLeastOne)
	b.waitText(fmt.Sprintf(`#rfm-grid td[data-r="%d"][data-f="%d"] .g`, r0, f0), human(g0))

	// The lapsed customer orders today: most recent, one more order.
	post(order("lapsed", 0, 80))
	var r1, f1 int
	var g1 string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if r1, f1, g1 = cell("lapsed"); r1 != r0 || f1 != f0 {
			break
		}
	}
	if r1 == r0 && f1 == f0 {
		t.Fatalf("the new order did not move lapsed from R%d F%d", r0, f0)
	}
	t.Logf("lapsed: R%d F%d %s -> R%d F%d %s", r0, f0, g0, r1, f1, g1)
	b.wait(sel(r1, f1), "at least one buyer", atLeastOne)
	if g1 != g0 {
		b.waitContains("#rfm-moves", human(g0)+" → "+human(g1))
	}
	// A click on the cell lists its buyers (GET /v1/rfm/cells/{r}/{f}/members),
	// the lapsed customer among them.
	b.do(chromedp.Click(chromedp.CSS(fmt.Sprintf(`#rfm-grid td[data-r="%d"][data-f="%d"]`, r1, f1))))
	b.waitContains("#members-title", fmt.Sprintf("RFM: %s · R%d F%d", human(g1), r1, f1))
	b.waitContains("#members-list", "User lapsed")
	b.screenshot("rfm")
	// The lookup names the RFM features as a marketer reads them, and
	// shows the traits once (as Traits, not also as the feature's JSON).
	b.lookup("lapsed")
	b.waitContains("#lookup-result", "RFM group")
	b.waitContains("#lookup-result", "RFM R")
	b.waitContains("#lookup-result", human(g1))
	if got := b.text("#lookup-result"); strings.Contains(got, "Profile traits") {
		t.Errorf("the lookup lists the traits feature among the features: %q", got)
	}
}

// human is the dashboard's name for a group (app.js human()).
func human(s string) string {
	s = strings.ReplaceAll(s, "_", " ")
	return strings.ToUpper(s[:1]) + s[1:]
}
