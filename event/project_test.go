package event

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

// projections are what FuzzProjection compares with Unmarshal: typical
// feature reads, a nested path, whole maps, and everything.
var projections = []*Projection{
	NewProjection([]string{"event", "properties.revenue", "properties.product_id", "traits.country"}, false),
	NewProjection([]string{"context.page.url", "properties.a", "properties.", "integrations"}, false),
	NewProjection([]string{"properties", "traits.x", "context.x", "integrations.x"}, false),
	NewProjection(nil, false),
	NewProjection(nil, true),
}

// projectionSeeds are records out of the ordinary: each must take the
// path that reads it as Unmarshal does.
var projectionSeeds = []string{
	`{"type":"track","event":"Order Completed","userId":"u1","messageId":"m1","timestamp":"2025-06-01T12:00:00Z","receivedAt":"2025-06-01T12:00:01.5Z","properties":{"revenue":12.5,"product_id":"p1","other":{"x":[1,2,{"y":null}]}},"traits":{"country":"FR"}}`,
	` { "type" : "identify" , "anonymousId" : "a" , "receivedAt" : "2025-06-01T12:00:00Z" , "traits" : { "country" : "DE" , "country" : "AT" } } `,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","properties":{"revenue":-0,"product_id":1e3}}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","properties":{"revenue":1e400}}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","properties":{"other":1e400}}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","properties":{"reve\u006eue":3}}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","properties":{"revenue":"\u00e9\n"}}`,
	`{"type":"track","event":"e\u0301","userId":"u\"","receivedAt":"2025-06-01T12:00:00Z"}`,
	`{"Type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z"}`,
	`{"type":"track","EVENT":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z"}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","ſentAt":"x"}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","properties":{"a":1},"properties":{"b":2}}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","properties":null}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","properties":[]}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","properties":"x"}`,
	`{"type":"track","event":"e","userId":5,"receivedAt":"2025-06-01T12:00:00Z"}`,
	`{"type":"track","event":"e","userId":null,"anonymousId":"a","receivedAt":"2025-06-01T12:00:00Z"}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00+02:00","timestamp":null}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01","timestamp":"2025-06-01T12:00:00Z"}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":1748779200000}`,
	`{"type":"track","event":"e","userId":"u","sentAt":"bad","receivedAt":"2025-06-01T12:00:00Z"}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z"} x`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z",}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","extra":{"deep":[true,false,null,"s",-1.25]}}`,
	`{"type":"bogus","userId":"u","receivedAt":"2025-06-01T12:00:00Z"}`,
	`{"type":"track","userId":"u","receivedAt":"2025-06-01T12:00:00Z"}`,
	`{"type":"page","userId":"u"}`,
	`{"type":"alias","userId":"u","previousId":"p","timestamp":"2025-06-01T12:00:00Z","integrations":{"All":false,"x":{"y":1}},"context":{"page":{"url":"/a"}}}`,
	`{}`, `null`, `[]`, `"x"`, ``, `{"type":"track"`, "{\"type\":\"track\xff\"}",
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","properties":{"revenue":12345678901234567890123}}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","properties":{"product_id":"a","product_id":"b"}}`,
	`{"type":"track","event":"e","userId":"u","receivedAt":"2025-06-01T12:00:00Z","properties":{}}`,
	`{"type":"page","userId":"u","receivedAt":"2024-02-29T23:59:59.999999999Z","timestamp":"2024-02-28T00:00:00.1Z"}`,
	`{"type":"page","userId":"u","receivedAt":"2023-02-29T00:00:00Z"}`,
	`{"type":"page","userId":"u","receivedAt":"2025-06-01T24:00:00Z"}`,
	`{"type":"page","userId":"u","receivedAt":"2025-06-01T12:00:60Z"}`,
	`{"type":"page","userId":"u","receivedAt":"2025-06-01T12:00:00.Z"}`,
	`{"type":"page","userId":"u","receivedAt":"2025-06-01T12:00:00.1234567891Z"}`,
	`{"type":"page","userId":"u","receivedAt":"0000-01-01T00:00:00Z"}`,
	`{"type":"page","userId":"u","receivedAt":"2025-13-01T00:00:00Z"}`,
	`{"type":"page","userId":"u","receivedAt":"2025-06-01t12:00:00z"}`,
	`{"type":"page","userId":"u","receivedAt":"2025-06-01T12:00:00+00:00"}`,
	`{"type":"page","userId":"u","receivedAt":"2025-06-01T12:00:0-Z"}`,
}

// filler is decoded before each fuzz input, into the same Event.
var filler = []byte(`{"type":"track","event":"Order Completed","userId":"stale","anonymousId":"a","previousId":"p",` +
	`"groupId":"g","name":"n","featureSet":"fs","messageId":"m","timestamp":"2025-06-01T12:00:00Z","receivedAt":"2025-06-01T12:00:00Z",` +
	`"originalTimestamp":"2025-06-01T12:00:00Z","sentAt":"2025-06-01T12:00:00Z",` +
	`"properties":{"revenue":1,"product_id":"p","a":1,"x":1},"traits":{"country":"FR","x":1},"context":{"page":1,"x":1},"integrations":{"x":1}}`)

func FuzzProjection(f *testing.F) {
	for _, b := range testdataEvents(f) {
		f.Add(b)
		// The same event as a record, the form the stream reads.
		if e, err := Decode(b, now, DefaultLimits, Defaults{}); err == nil {
			rec, err := e.Marshal()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(rec)
		}
	}
	for _, s := range projectionSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want, werr := Unmarshal(b)
		for pi, p := range projections {
			// Decoded over another record: nothing of it may stay.
			var got Event
			if err := p.Unmarshal(filler, &got); err != nil {
				t.Fatal(err)
			}
			err := p.Unmarshal(b, &got)
			if (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error() {
				t.Fatalf("projection %d: error %v, Unmarshal's %v\n%s", pi, err, werr, b)
			}
			if err != nil {
				continue
			}
			checkProjected(t, p, want, &got, b)
		}
	})
}

// checkProjected compares a projected decode with Unmarshal's: the same
// top-level fields, and in the maps the projected keys; any other key
// there (a record Unmarshal read) has Unmarshal's value too.
func checkProjected(t *testing.T, p *Projection, want, got *Event, b []byte) {
	t.Helper()
	w, g := *want, *got
	wm := [4]map[string]any{w.Properties, w.Traits, w.Context, w.Integrations}
	gm := [4]map[string]any{g.Properties, g.Traits, g.Context, g.Integrations}
	w.Properties, w.Traits, w.Context, w.Integrations = nil, nil, nil, nil
	g.Properties, g.Traits, g.Context, g.Integrations = nil, nil, nil, nil
	if !reflect.DeepEqual(w, g) {
		t.Fatalf("top-level fields differ:\n got %+v\nwant %+v\n%s", g, w, b)
	}
	for i := range wm {
		switch {
		case p.all || p.whole[i]:
			if !same(wm[i], gm[i]) || (wm[i] == nil) != (gm[i] == nil) {
				t.Fatalf("map %d: got %#v, want %#v\n%s", i, gm[i], wm[i], b)
			}
		default:
			for k, v := range gm[i] {
				if wv, ok := wm[i][k]; !ok || !same(wv, v) {
					t.Fatalf("map %d key %q: got %#v, want %#v (%v)\n%s", i, k, v, wv, ok, b)
				}
			}
			for _, k := range p.maps[i] {
				if _, ok := wm[i][k]; ok {
					if _, ok := gm[i][k]; !ok {
						t.Fatalf("map %d: key %q missing\n%s", i, k, b)
					}
				}
			}
		}
	}
}

// same is DeepEqual that also tells -0 from 0.
func same(a, b any) bool {
	return reflect.DeepEqual(a, b) && fmt.Sprintf("%#v", a) == fmt.Sprintf("%#v", b)
}

func TestProjectionKeeps(t *testing.T) {
	p := NewProjection([]string{"event", "properties.address.city", "properties.revenue", "traits"}, false)
	rec := []byte(`{"type":"track","event":"Order Completed","userId":"u","timestamp":"2025-06-01T12:00:00Z",` +
		`"properties":{"revenue":9.5,"address":{"city":"Lyon","zip":"69001"},"big":[1,2,3]},"traits":{"a":1},"context":{"ip":"1.2.3.4"}}`)
	var e Event
	if err := p.Unmarshal(rec, &e); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"revenue": 9.5, "address": map[string]any{"city": "Lyon", "zip": "69001"}}
	if !reflect.DeepEqual(e.Properties, want) {
		t.Fatalf("properties %v, want %v", e.Properties, want)
	}
	if !reflect.DeepEqual(e.Traits, map[string]any{"a": 1.0}) || e.Context != nil {
		t.Fatalf("traits %v context %v", e.Traits, e.Context)
	}
	if e.Timestamp != time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) || e.Event != "Order Completed" {
		t.Fatalf("top-level fields: %+v", e)
	}
}

func BenchmarkProjection(b *testing.B) {
	ev := &Event{Type: Track, Event: "Product Viewed", UserID: "user-123", MessageID: "b123456",
		Timestamp: now, ReceivedAt: now, Properties: map[string]any{"product_id": "p42", "price": 19.9, "name": "A thing"},
		Context: map[string]any{"ip": "1.2.3.4", "library": map[string]any{"name": "analytics.js", "version": "2.1"}}}
	rec, err := ev.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	p := NewProjection([]string{"event", "properties.product_id", "properties.revenue", "traits.country"}, false)
	b.Run("projected", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(rec)))
		var e Event
		for b.Loop() {
			if err := p.Unmarshal(rec, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(rec)))
		for b.Loop() {
			if _, err := Unmarshal(rec); err != nil {
				b.Fatal(err)
			}
		}
	})
}
