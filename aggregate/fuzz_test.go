package aggregate

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
)

// fuzzSet has one feature of every agg, windowed and lifetime.
func fuzzSet(tb testing.TB) *Set {
	tb.Helper()
	var defs []config.Feature
	for _, a := range config.Aggregations {
		for _, w := range []time.Duration{0, time.Minute} {
			d := config.Feature{Name: a + "_" + []string{"life", "1m"}[int(w/time.Minute)],
				Agg: a, Field: "properties.x", Window: config.Duration(w)}
			if a == "count" {
				d.Field = ""
			}
			if a == "last_n" {
				d.N = 3
			}
			if a == "last_by_key" {
				if w != 0 {
					continue // lifetime only
				}
				d.Field, d.N = "properties", 3
			}
			defs = append(defs, d)
		}
	}
	defs = append(defs, config.Feature{Name: "last_at", Agg: "last", Field: "timestamp"})
	set, err := Compile(defs, Options{AllowedLateness: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	return set
}

// FuzzDecodeState: garbage never panics, and whatever decodes re-encodes
// to the same bytes (so nothing was misread into a different State).
func FuzzDecodeState(f *testing.F) {
	set := fuzzSet(f)
	st := set.NewState()
	for i, x := range []any{1.0, "a", map[string]any{"k": []any{true, nil, 2.5}}, "b", 3.0} {
		e := &event.Event{Type: event.Track, MessageID: string(rune('a' + i)),
			Timestamp: time.UnixMilli(int64(i) * 20000), Properties: map[string]any{"x": x}}
		if _, err := set.Apply(st, e); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(st.AppendBinary(nil))
	f.Add(set.NewState().AppendBinary(nil))
	seeds, _ := filepath.Glob("testdata/state/*.bin")
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := set.DecodeState(b)
		if err != nil {
			return
		}
		again := st.AppendBinary(nil)
		st2, err := set.DecodeState(again)
		if err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
		if !bytes.Equal(st2.AppendBinary(nil), again) {
			t.Fatal("encoding is not stable")
		}
		now := time.UnixMilli(st.NewestMillis())
		set.Values(st, now, nil)
		set.NextChange(st, now)
		e := &event.Event{Type: event.Track, MessageID: "z", Timestamp: now, Properties: map[string]any{"x": 1.0}}
		set.Apply(st, e)
	})
}
