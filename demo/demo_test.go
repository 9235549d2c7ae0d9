package demo_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/demo"
	"github.com/pulse-rt/pulse/event"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// steps runs g for d of simulated time at rate events/s.
func steps(g *demo.Generator, d time.Duration, rate int) []demo.Event {
	var out []demo.Event
	n := int(d.Seconds()) * rate
	for i := range n {
		out = append(out, g.Next(t0.Add(time.Duration(i)*time.Second/time.Duration(rate)))...)
	}
	return out
}

func TestDeterministic(t *testing.T) {
	a := steps(demo.NewGenerator(42, 500), 20*time.Second, 30)
	b := steps(demo.NewGenerator(42, 500), 20*time.Second, 30)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different traffic")
	}
	c := steps(demo.NewGenerator(43, 500), 20*time.Second, 30)
	if reflect.DeepEqual(a, c) {
		t.Fatal("different seeds, same traffic")
	}
}

// The events feed every event-based feature of the e-commerce example, and
// within a minute at 30 events/s its segments have members.
func TestFeedsTheExampleSegments(t *testing.T) {
	cfg, err := config.Load("../examples/ecommerce/pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	evs := steps(demo.NewGenerator(1, 0), time.Minute, 30)
	names := map[string]int{}
	types := map[string]int{}
	users := map[string]int{}
	viewed := map[string]map[string]bool{}
	carts, orders, revenue := map[string]int{}, map[string]int{}, map[string]float64{}
	logins := 0
	for _, e := range evs {
		name, _ := e["event"].(string)
		names[name]++
		types[e["type"].(string)]++
		u, _ := e["userId"].(string)
		if u == "" {
			u = e["anonymousId"].(string) // browsing before login
		}
		if e["type"] == "identify" && e["anonymousId"] != nil {
			logins++
		}
		users[u]++
		props, _ := e["properties"].(map[string]any)
		switch name {
		case "Product Viewed":
			if viewed[u] == nil {
				viewed[u] = map[string]bool{}
			}
			viewed[u][props["product_id"].(string)] = true
			if props["category"] == "" {
				t.Fatal("Product Viewed without a category")
			}
		case "Product Added":
			carts[u]++
		case "Order Completed":
			orders[u]++
			revenue[u] += props["revenue"].(float64)
		}
		if e["type"] == "identify" {
			if c, _ := e["traits"].(map[string]any)["country"].(string); c == "" {
				t.Fatal("identify without traits.country")
			}
		}
	}
	for _, f := range cfg.Features {
		if f.Event != "" && f.Event != "*" && names[f.Event] == 0 {
			t.Errorf("feature %s counts %q, which the demo never sends", f.Name, f.Event)
		}
		if f.Type != "" && types[f.Type] == 0 {
			t.Errorf("feature %s counts type %q, which the demo never sends", f.Name, f.Type)
		}
	}
	active, abandoners, big := 0, 0, 0
	for u := range users {
		if len(viewed[u]) >= 3 {
			active++
		}
		if carts[u] > 0 && orders[u] == 0 {
			abandoners++
		}
		if revenue[u] > 500 {
			big++
		}
	}
	t.Logf("1 min at 30/s: %d events, %d users and devices, %d logins linking a device; active_shoppers %d, cart_abandoners %d, big_spenders %d; %v",
		len(evs), len(users), logins, active, abandoners, big, names)
	if active < 3 || abandoners < 3 {
		t.Fatalf("segments barely move: active %d, abandoners %d", active, abandoners)
	}
	// Anonymous browsing that later identifies: merges to see.
	if logins < 10 {
		t.Fatalf("only %d identifies link a device to a user in a minute", logins)
	}
	// Zipf: a few heavy users and a long tail.
	top := 0
	for _, n := range users {
		top = max(top, n)
	}
	if top < len(evs)/200 || len(users) < 200 {
		t.Fatalf("not heavy-tailed: top user %d of %d events, %d users", top, len(evs), len(users))
	}
}

// Run posts batches that ingest accepts. It runs until 25 events arrived
// (or a generous deadline passed), so a slow machine only makes it slower.
func TestRunPostsValidBatches(t *testing.T) {
	const want = 25
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var got []json.RawMessage
	var bad []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if user, _, _ := r.BasicAuth(); user != "wk" || r.URL.Path != "/v1/batch" {
			bad = append(bad, "auth or path: "+r.URL.Path)
		}
		b, err := event.DecodeBatch(body, event.Limits{MaxEventBytes: 32 << 10, MaxBatchEvents: 2500})
		if err != nil {
			bad = append(bad, err.Error())
			w.WriteHeader(400)
			return
		}
		for _, raw := range b.Items {
			if _, err := event.Decode(raw, time.Now(), event.Limits{MaxEventBytes: 32 << 10}, b.Defaults); err != nil {
				bad = append(bad, err.Error())
			}
			got = append(got, json.RawMessage(raw))
		}
		if len(got) >= want {
			cancel()
		}
		w.Write([]byte(`{"success":true}`))
	}))
	defer srv.Close()
	if err := demo.Run(ctx, demo.Options{URL: srv.URL, WriteKey: "wk", Rate: 50, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("ingest would reject: %v", bad[:min(3, len(bad))])
	}
	if len(got) < want {
		t.Fatalf("%d events posted before the deadline, want %d", len(got), want)
	}
}
