package aggregate

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
)

// exampleFeatures is examples/ecommerce/pulse.yaml's features plus two with
// a where filter: 23 features, 21 aggregated.
func exampleFeatures(tb testing.TB) []config.Feature {
	tb.Helper()
	c, err := config.Load("../examples/ecommerce/pulse.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	return append(c.Features,
		config.Feature{Name: "big_orders_30d", Agg: "count", Event: "Order Completed",
			Where: "properties.revenue >= 100", Window: config.Duration(30 * 24 * time.Hour)},
		config.Feature{Name: "fr_views_24h", Agg: "count", Event: "Product Viewed",
			Where: `context.country == "FR"`, Window: config.Duration(24 * time.Hour)},
	)
}

// benchEvents is a shop's traffic: mostly product views, some cart adds,
// orders, sessions, pages and identifies, a second or so apart, with some
// arriving a little out of order.
func benchEvents(n int) []*event.Event {
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	evs := make([]*event.Event, n)
	cats := []string{"shoes", "hats", "bags", "socks", "coats"}
	for i := range evs {
		ts := base.Add(time.Duration(i)*1500*time.Millisecond - time.Duration(r.IntN(5000))*time.Millisecond)
		e := &event.Event{Type: event.Track, MessageID: fmt.Sprintf("m%d", i), UserID: "u1", Timestamp: ts,
			Context: map[string]any{"country": []string{"FR", "DE", "US"}[r.IntN(3)]}}
		switch x := r.IntN(100); {
		case x < 55:
			e.Event = "Product Viewed"
			e.Properties = map[string]any{"product_id": fmt.Sprintf("p%d", r.IntN(500)),
				"category": cats[r.IntN(len(cats))], "price": float64(r.IntN(200))}
		case x < 65:
			e.Event = "Product Added"
			e.Properties = map[string]any{"product_id": fmt.Sprintf("p%d", r.IntN(500))}
		case x < 72:
			e.Event = "Order Completed"
			e.Properties = map[string]any{"revenue": float64(r.IntN(300)), "order_id": fmt.Sprint(i)}
		case x < 80:
			e.Event = "Session Started"
		case x < 95:
			e.Type, e.Name = event.Page, "Home"
		default:
			e.Type = event.Identify
			e.Traits = map[string]any{"country": "FR"}
		}
		evs[i] = e
	}
	return evs
}

func BenchmarkApply(b *testing.B) {
	set, err := Compile(exampleFeatures(b), Options{AllowedLateness: 7 * 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	evs := benchEvents(1 << 16)
	st := set.NewState()
	for _, e := range evs[:1<<12] { // warm up: tiles exist, slices have grown
		if _, err := set.Apply(st, e); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		e := evs[i&(len(evs)-1)]
		if i&(len(evs)-1) == 0 && i > 0 {
			st = set.NewState() // the stream wraps: start over rather than go back in time
		}
		if _, err := set.Apply(st, e); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkValues(b *testing.B) {
	set, err := Compile(exampleFeatures(b), Options{AllowedLateness: 7 * 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	evs := benchEvents(5000)
	st := set.NewState()
	for _, e := range evs {
		if _, err := set.Apply(st, e); err != nil {
			b.Fatal(err)
		}
	}
	now := evs[len(evs)-1].Timestamp.Add(time.Minute)
	var dst []any
	b.ReportAllocs()
	for b.Loop() {
		dst = set.Values(st, now, dst)
	}
}

func BenchmarkEncodeDecode(b *testing.B) {
	set, err := Compile(exampleFeatures(b), Options{AllowedLateness: 7 * 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	st := set.NewState()
	for _, e := range benchEvents(5000) {
		if _, err := set.Apply(st, e); err != nil {
			b.Fatal(err)
		}
	}
	buf := st.AppendBinary(nil)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = st.AppendBinary(buf[:0])
		if _, err := set.DecodeState(buf); err != nil {
			b.Fatal(err)
		}
	}
}
