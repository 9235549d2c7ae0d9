package backfill

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// benchFeatures are 20 features of the usual kinds.
func benchFeatures() (string, []string) {
	var b strings.Builder
	var names []string
	b.WriteString("features:\n")
	add := func(name, body string) {
		names = append(names, name)
		fmt.Fprintf(&b, "  - name: %s\n%s", name, body)
	}
	for _, w := range []string{"1h", "24h", "7d", "30d"} {
		add("orders_"+w, "    agg: count\n    event: Order Completed\n    window: "+w+"\n")
		add("revenue_"+w, "    agg: sum\n    event: Order Completed\n    field: properties.revenue\n    window: "+w+"\n")
		add("views_"+w, "    agg: count\n    event: Product Viewed\n    window: "+w+"\n")
	}
	add("max_order_30d", "    agg: max\n    event: Order Completed\n    field: properties.revenue\n    window: 30d\n")
	add("avg_order_30d", "    agg: avg\n    event: Order Completed\n    field: properties.revenue\n    window: 30d\n")
	add("products_7d", "    agg: distinct\n    event: Product Viewed\n    field: properties.product_id\n    window: 7d\n")
	add("last_order_at", "    agg: last\n    event: Order Completed\n    field: timestamp\n")
	add("first_seen", "    agg: first\n    field: timestamp\n")
	add("orders_lifetime", "    agg: count\n    event: Order Completed\n")
	add("sessions_7d", "    agg: count\n    event: Session Started\n    window: 7d\n")
	add("days_since_order", "    expr: 'last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1'\n")
	return b.String(), names
}

// BenchmarkTrainingSet builds a training set of 100k labels x 20 features
// over 500k events (10k users), the target size.
//
//	go test -run '^$' -bench TrainingSet -benchtime 1x ./backfill
func BenchmarkTrainingSet(b *testing.B) {
	native, _ := testenv.ClickHouse(b)
	db := testenv.ClickHouseDatabase(b)
	yaml, names := benchFeatures()
	cfg, err := config.Parse([]byte(yaml), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	cfg.ClickHouse.Addr, cfg.ClickHouse.Database = native, db
	conn, err := history.Open(cfg.ClickHouse)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	if err := history.Migrate(ctx, conn, db); err != nil {
		b.Fatal(err)
	}
	const users, perUser, labelsPerUser = 10_000, 50, 10
	end := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(3, 4))
	evNames := []string{"Order Completed", "Product Viewed", "Product Viewed", "Session Started"}
	var evs []*event.Event
	n := 0
	for u := range users {
		for range perUser {
			at := end.Add(-time.Duration(rng.Int64N(int64(60 * 24 * time.Hour))))
			n++
			evs = append(evs, &event.Event{Type: event.Track, MessageID: fmt.Sprint("b", n), UserID: fmt.Sprint("user-", u),
				Event: evNames[rng.IntN(len(evNames))], Timestamp: at, ReceivedAt: at,
				Properties: map[string]any{"revenue": float64(rng.IntN(10000)) / 100, "product_id": fmt.Sprint("p", rng.IntN(200))}})
		}
		if len(evs) >= 100_000 {
			if err := history.InsertEvents(ctx, conn, db, evs); err != nil {
				b.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	if err := history.InsertEvents(ctx, conn, db, evs); err != nil {
		b.Fatal(err)
	}
	var labels []Label
	for u := range users {
		for range labelsPerUser {
			labels = append(labels, Label{EntityID: fmt.Sprint("user-", u), At: end.Add(-time.Duration(rng.Int64N(int64(30 * 24 * time.Hour)))), Label: "0"})
		}
	}
	r := history.NewReader(conn, db)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		rows, err := TrainingSet(ctx, cfg, r, labels, names, TrainingSetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if len(rows.Values) != len(labels) {
			b.Fatal("missing rows")
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/set")
		b.ReportMetric(float64(users*perUser)/time.Since(start).Seconds(), "events/s")
	}
}
