package webtest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/ingest"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/stream"
)

// TestDashboardFullStack posts events to the real ingest API and watches
// the dashboard, served by the real scorer, follow: the stream computes the
// features and segments on kfake and Pebble, the live feed streams the
// changes, the page's counts and feed move.
func TestDashboardFullStack(t *testing.T) {
	browser := chromium(t)
	cfg, err := config.Load("../../examples/ecommerce/pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	cfg.Kafka.Brokers = emb.Addrs()
	cfg.Kafka.Partitions = 2
	cfg.DataDir = t.TempDir()
	cfg.Store.Path = cfg.DataDir + "/store"
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var running []func() error
	defer func() {
		cancel()
		<-done
	}()
	producer, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	if err := kafka.EnsureTopics(ctx, producer, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	store, err := featurestore.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	proc, err := stream.New(cfg, store, stream.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ingestLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scorerLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	live := scorer.NewLive(cfg, scorer.LiveOptions{Log: log})
	ids := scorer.NewIdentities(cfg, log)
	srv, err := scorer.New(cfg, store, scorer.WithLive(live), scorer.WithLogger(log), scorer.WithDashboardKey("dev-read-key"), scorer.WithIdentities(ids))
	if err != nil {
		t.Fatal(err)
	}
	running = append(running,
		func() error { return ingest.New(cfg, producer, log).Serve(ctx, ingestLn) },
		func() error { return proc.Run(ctx) },
		func() error { return live.Run(ctx) },
		func() error { return ids.Run(ctx) },
		func() error { return srv.Serve(ctx, scorerLn) },
	)
	errs := make(chan error, len(running))
	for _, run := range running {
		go func() { errs <- run() }()
	}
	go func() {
		for range running {
			if err := <-errs; err != nil && ctx.Err() == nil {
				t.Errorf("service stopped: %v", err)
			}
		}
		close(done)
	}()

	ingestURL := "http://" + ingestLn.Addr().String()
	post := func(events ...string) {
		t.Helper()
		body := `{"batch":[` + strings.Join(events, ",") + `]}`
		req, _ := http.NewRequest("POST", ingestURL+"/v1/batch", strings.NewReader(body))
		req.SetBasicAuth("dev-write-key", "")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("ingest answered %d", resp.StatusCode)
		}
	}
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

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
