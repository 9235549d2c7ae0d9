package aggregate

import (
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
)

func TestDeriveAtReadTime(t *testing.T) {
	set, err := Compile([]config.Feature{
		{Name: "orders", Agg: "count", Event: "Order Completed"},
		{Name: "last_order_at", Agg: "last", Event: "Order Completed", Field: "timestamp"},
		{Name: "days_since_last_order", Expr: "last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1"},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	st := set.NewState()
	if _, err := set.Apply(st, &event.Event{Type: event.Track, Event: "Order Completed", UserID: "1", MessageID: "m", Timestamp: t0}); err != nil {
		t.Fatal(err)
	}
	vals := set.Values(st, t0.Add(time.Hour), nil)
	if vals[2] != 0.0 {
		t.Fatalf("days since, an hour later: %v", vals[2])
	}
	// Ten days on, with no new event, the stored vector still says 0;
	// Derive brings the derived value to now and leaves the others alone.
	set.Derive(vals, t0.Add(10*24*time.Hour+time.Minute))
	if vals[2] != 10.0 || vals[0] != 1.0 {
		t.Fatalf("after Derive: %v", vals)
	}
	// Wrong length: nothing happens.
	set.Derive(vals[:2], t0)
}
