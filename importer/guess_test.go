package importer

import (
	"reflect"
	"testing"
)

// TestGuessMapping: the Import page's first guess for common exports.
func TestGuessMapping(t *testing.T) {
	f := func(header []string, rows [][]string, want map[string]string, wantFormat string) {
		t.Helper()
		g := GuessMapping(header, rows)
		if !reflect.DeepEqual(g.Fields, want) || g.TimeFormat != wantFormat {
			t.Errorf("%v:\n got %v %q\nwant %v %q", header, g.Fields, g.TimeFormat, want, wantFormat)
		}
		if _, err := g.Mapping(); err != nil {
			t.Errorf("%v: the guess is not a mapping: %v", header, err)
		}
	}
	f([]string{"Order ID", "Customer Email", "Customer", "Total (EUR)", "Created At"},
		[][]string{{"1", "a@b.c", "c1", "9.5", "2026-11-30T10:00:00Z"}},
		map[string]string{"userId": "Customer", "traits.email": "Customer Email", "timestamp": "Created At", "event": `"Imported"`,
			"properties.order_id": "Order ID", "properties.total_eur": "Total (EUR)"}, "")
	f([]string{"userId", "event", "properties.revenue", "ts"}, [][]string{{"u", "x", "1", "1764496800"}, {"u", "x", "1", ""}},
		map[string]string{"userId": "userId", "event": "event", "properties.revenue": "properties.revenue", "timestamp": "ts"}, "unix")
	f([]string{"device_id", "action", "when"}, [][]string{{"d", "x", "30.11.2026"}},
		map[string]string{"anonymousId": "device_id", "event": "action", "properties.when": "when"}, "")
	f([]string{"email", "date"}, [][]string{{"a@b.c", "30.11.2026 10:00:00"}},
		map[string]string{"traits.email": "email", "timestamp": "date", "event": `"Imported"`}, "02.01.2006 15:04:05")
	f([]string{"user", "time"}, [][]string{{"u", "1764496800123"}},
		map[string]string{"userId": "user", "timestamp": "time", "event": `"Imported"`}, "unix_ms")
}
