package history

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/event"
)

// TestEachEntityShards: however the read is split into entity ranges, every
// entity comes once, with its events in (time, receive time, message id)
// order and each message id once. The reader groups and sorts rows itself
// (ClickHouse only filters), so ties and replayed duplicates across inserts
// (separate parts) are the cases to get right.
func TestEachEntityShards(t *testing.T) {
	conn, db := migratedDB(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	want := map[string][]string{} // entity -> message ids in replay order
	var all []*event.Event
	for u := range 40 {
		user := fmt.Sprintf("u%02d", u)
		if u%3 == 0 {
			user += "-ü日" // multi-byte ids: the reader splits concatenated strings by byte lengths
		}
		var evs []*event.Event
		for i := range 1 + rng.IntN(30) {
			at := base.Add(time.Duration(rng.IntN(5)) * time.Minute) // many ties
			evs = append(evs, &event.Event{Type: event.Track, MessageID: fmt.Sprintf("%s-m%02d", user, i), UserID: user, Event: "Évènement",
				Properties: map[string]any{"k": user, "n": float64(i), "other": map[string]any{"k": "nested"}},
				Timestamp:  at, ReceivedAt: at.Add(time.Duration(rng.IntN(2)) * time.Second)})
		}
		sorted := slices.Clone(evs)
		slices.SortFunc(sorted, func(a, b *event.Event) int {
			return cmp.Or(a.Timestamp.Compare(b.Timestamp), a.ReceivedAt.Compare(b.ReceivedAt), strings.Compare(a.MessageID, b.MessageID))
		})
		for _, e := range sorted {
			want[user] = append(want[user], e.MessageID)
		}
		all = append(all, evs...)
	}
	// Three inserts, the last replaying a third of the events: separate parts.
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	for _, part := range [][]*event.Event{all[:len(all)/2], all[len(all)/2:], all[:len(all)/3]} {
		if err := InsertEvents(ctx, conn, db, part); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(conn, db)
	for _, c := range []struct{ shards, workers int }{{0, 1}, {1, 1}, {3, 1}, {7, 1}, {100, 1}, {0, 3}, {7, 2}} {
		shards := c.shards
		got := map[string][]string{}
		var mu sync.Mutex
		err := r.EachEntity(ctx, EventFilter{Shards: shards, Workers: c.workers}, func(id string, evs []*event.Event) error {
			mu.Lock()
			defer mu.Unlock()
			if _, again := got[id]; again {
				t.Errorf("shards=%d: entity %s came twice", shards, id)
			}
			got[id] = []string{}
			for _, e := range evs {
				if e.UserID != id {
					t.Errorf("shards=%d: entity %s got an event of %s", shards, id, e.UserID)
				}
				got[id] = append(got[id], e.MessageID)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Errorf("shards=%d: %d entities, want %d", shards, len(got), len(want))
		}
		for id, w := range want {
			if !slices.Equal(got[id], w) {
				t.Errorf("shards=%d: %s:\n got %v\nwant %v", shards, id, got[id], w)
			}
		}
	}
	// Reading some fields: those, and of the maps only the keys named.
	err := r.EachEntity(ctx, EventFilter{Fields: []string{"event", "properties.k", "properties.n"}, MapEvents: []string{"x", "Évènement"}, Workers: 2}, func(id string, evs []*event.Event) error {
		for _, e := range evs {
			want := map[string]any{"k": id, "n": e.Properties["n"]}
			if e.Event != "Évènement" || e.UserID != "" || !reflect.DeepEqual(e.Properties, want) || e.Properties["n"] == nil {
				t.Errorf("Fields read of %s: event %q, user %q, properties %v", id, e.Event, e.UserID, e.Properties)
				return nil
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The maps of only some events: here none of those read.
	for _, only := range [][]string{{"Other"}, {}} {
		err = r.EachEntity(ctx, EventFilter{Fields: []string{"event", "properties.k"}, MapEvents: only}, func(id string, evs []*event.Event) error {
			for _, e := range evs {
				if e.Event != "Évènement" || e.Properties != nil {
					t.Errorf("MapEvents %q: %s: event %q, properties %v", only, id, e.Event, e.Properties)
					return nil
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// fn's error stops the read and comes back.
	stop := fmt.Errorf("stop")
	n := 0
	err = r.EachEntity(ctx, EventFilter{Shards: 5}, func(string, []*event.Event) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	})
	if err != stop || n != 3 {
		t.Errorf("after an error at the third entity: err %v after %d calls", err, n)
	}
	err = r.EachEntity(ctx, EventFilter{Shards: 5, Workers: 2}, func(string, []*event.Event) error { return stop })
	if err != stop {
		t.Errorf("two workers, fn failing: err %v", err)
	}
}

// FuzzDecodeFlat: the fast path of decodeMap answers exactly what the JSON
// decoder answers, or steps aside.
func FuzzDecodeFlat(f *testing.F) {
	for _, s := range []string{
		`{"revenue":12.5,"product_id":"p1","currency":"USD"}`, `{}`, ` { } `, `{"a":null,"b":true,"c":false}`,
		`{"a":-0.5e-3,"b":0,"c":1E+2}`, `{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":"x\"y"}`, `{"a":"é"}`, "{\"a\":\"\xff\"}",
		`{"a":{"b":1}}`, `{"a":[1]}`, `{"a":1,"a":2}`, `{"a":1,}`, `{"a" 1}`, `{"a":1} x`, `{"a":1e400}`, `{"a":-}`, `{"a":tru}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := decodeFlat(s)
		if !ok {
			return
		}
		var want map[string]any
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatalf("decodeFlat(%q) = %v, but the decoder refuses it: %v", s, got, err)
		}
		if fmt.Sprintf("%#v", sortedMap(got)) != fmt.Sprintf("%#v", sortedMap(want)) {
			t.Fatalf("decodeFlat(%q) = %#v, the decoder %#v", s, got, want)
		}
	})
}

func sortedMap(m map[string]any) [][2]any {
	var kv [][2]any
	for k, v := range m {
		kv = append(kv, [2]any{k, v})
	}
	slices.SortFunc(kv, func(a, b [2]any) int { return strings.Compare(a[0].(string), b[0].(string)) })
	return kv
}

// TestEachEntityWholeEvent: with no Fields, every field of an event comes
// back as it went in (times to the millisecond), through the packed rows.
func TestEachEntityWholeEvent(t *testing.T) {
	conn, db := migratedDB(t)
	ctx := context.Background()
	at := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	in := []*event.Event{
		{Type: event.Track, MessageID: "m1", UserID: "u-日", AnonymousID: "a1", Event: "Order Completed",
			Properties:   map[string]any{"revenue": 12.5, "nested": map[string]any{"k": "v"}, "s": "x\"y"},
			Traits:       map[string]any{"plan": "pro"},
			Context:      map[string]any{"ip": "10.0.0.1"},
			Integrations: map[string]any{"All": false},
			Timestamp:    at, OriginalTimestamp: at.Add(-time.Second), SentAt: at.Add(-500 * time.Millisecond), ReceivedAt: at.Add(time.Second),
			FeatureSet: "fs"},
		{Type: event.Page, MessageID: "m2", UserID: "u-日", Name: "Home", Timestamp: at.Add(time.Millisecond), ReceivedAt: at.Add(time.Second)},
		{Type: event.Alias, MessageID: "m3", UserID: "u2", PreviousID: "a9", Timestamp: at.Add(-time.Hour), ReceivedAt: at},
		{Type: event.Group, MessageID: "m4", AnonymousID: "a5", GroupID: "g1", Timestamp: at.Add(-time.Hour), ReceivedAt: at},
	}
	if err := InsertEvents(ctx, conn, db, in); err != nil {
		t.Fatal(err)
	}
	got := map[string]*event.Event{}
	err := NewReader(conn, db).EachEntity(ctx, EventFilter{Maps: AllMaps}, func(id string, evs []*event.Event) error {
		for _, e := range evs {
			c := *e
			got[e.MessageID] = &c
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range in {
		g := got[want.MessageID]
		if g == nil {
			t.Errorf("%s: not read", want.MessageID)
			continue
		}
		if !reflect.DeepEqual(g, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", want.MessageID, g, want)
		}
	}
}
