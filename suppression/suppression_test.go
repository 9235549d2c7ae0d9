package suppression

import (
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/identity"
)

// A table answers Has, Get and List from what it was loaded with (Run's
// reading of the topic is tested through ingest and the scorer, on a
// broker); a nil or empty table suppresses nothing; changed hears of
// each load.
func TestTable(t *testing.T) {
	var nilTable *Table
	if nilTable.Has([]byte("a")) {
		t.Fatal("a nil table suppresses")
	}
	var sizes []int
	tab := New(&config.Config{}, nil, func(n int) { sizes = append(sizes, n) })
	if tab.Has([]byte("a")) || len(tab.List()) != 0 {
		t.Fatal("an empty table suppresses")
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	tab.Load(map[string]identity.Suppression{
		"a": {At: at, RequestID: "d1"},
		"b": {At: at.Add(time.Hour), RequestID: "d2"},
		"c": {At: at, RequestID: "d1"},
	})
	if !tab.Has([]byte("a")) || tab.Has([]byte("z")) {
		t.Fatal("Has")
	}
	if e, ok := tab.Get("a"); !ok || e.RequestID != "d1" || !e.At.Equal(at.Truncate(time.Millisecond)) {
		t.Fatalf("Get a: %+v %v", e, ok)
	}
	if _, ok := tab.Get("z"); ok {
		t.Fatal("Get z")
	}
	var ids string
	for _, e := range tab.List() {
		ids += e.ID
	}
	if ids != "bac" || len(sizes) != 1 || sizes[0] != 3 {
		t.Fatalf("list %q (latest first, then by id), sizes %v", ids, sizes)
	}
}
