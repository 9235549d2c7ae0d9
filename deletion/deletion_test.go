package deletion

import (
	"strings"
	"testing"
	"time"
)

func TestRecordCodec(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	f := func(r Record, key string) {
		t.Helper()
		if got := string(r.Key()); got != key {
			t.Errorf("key %q, want %q", got, key)
		}
		got, err := Decode(r.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if got != r {
			t.Errorf("decoded %+v, want %+v", got, r)
		}
	}
	f(Record{Request: "delete-1", Stage: Requested, At: at, RequestedAt: at, Kind: "email", Suppress: true}, "delete-1/requested")
	f(Record{Request: "delete-1", Stage: Identity, At: at, RequestedAt: at, Kind: "user_id", Identifiers: 3, Entities: 2}, "delete-1/identity")
	f(Record{Request: "delete-1", Stage: Stream, At: at, Index: 0}, "delete-1/stream/0")
	f(Record{Request: "delete-1", Stage: History, At: at, Index: 2}, "delete-1/history/2")
	if s := string(Record{Request: "d", Stage: Stream}.Encode()); strings.Contains(s, "index") || strings.Contains(s, "kind") {
		t.Errorf("empty fields encoded: %s", s)
	}
}

func TestDecodeRefuses(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		_, err := Decode([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Decode(%s) = %v, want an error with %q", in, err, want)
		}
	}
	f(`{`, "cannot decode")
	f(`{"stage":"stream"}`, "no request_id")
	f(`{"request_id":"d","stage":"linker"}`, `unknown stage "linker"`)
	f(`{"request_id":"d","stage":"stream","index":-1}`, "index -1")
}

func TestPart(t *testing.T) {
	p := Part{Request: "delete-ab/c", Index: 12}
	got, err := ParsePart(p.String())
	if err != nil || got != p {
		t.Fatalf("ParsePart(%q) = %+v, %v", p.String(), got, err)
	}
	for _, s := range []string{"", "d", "/1", "d/", "d/x", "d/-1"} {
		if _, err := ParsePart(s); err == nil {
			t.Errorf("ParsePart(%q) took it", s)
		}
	}
}

func TestStatus(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tab := NewTable()
	if _, ok := tab.Status("delete-1", true); ok {
		t.Fatal("status of an unknown request")
	}
	check := func(id string, withHistory bool, state string, streamDone, historyDone int) Status {
		t.Helper()
		s, ok := tab.Status(id, withHistory)
		if !ok {
			t.Fatalf("no status of %s", id)
		}
		if s.State != state || s.Stream.PartsDone != streamDone || (s.History != nil && s.History.PartsDone != historyDone) {
			t.Fatalf("status %+v (history %+v), want %s with %d stream and %d history parts done", s, s.History, state, streamDone, historyDone)
		}
		if (s.History != nil) != withHistory {
			t.Fatalf("history %+v with withHistory %v", s.History, withHistory)
		}
		if (state == StateDone) == s.DoneAt.IsZero() {
			t.Fatalf("%s with done_at %v", state, s.DoneAt)
		}
		return s
	}

	tab.Add(Record{Request: "delete-1", Stage: Requested, At: at(0), RequestedAt: at(0), Kind: "anonymous_id", Suppress: true})
	s := check("delete-1", true, StatePending, 0, 0)
	if s.Kind != "anonymous_id" || !s.Suppressed || !s.RequestedAt.Equal(at(0)) || s.Identity.Done {
		t.Fatalf("requested: %+v", s)
	}
	// A task's record read before the linker's (another partition): it
	// counts once the linker says how many entities there are.
	tab.Add(Record{Request: "delete-1", Stage: Stream, At: at(30), Index: 1})
	check("delete-1", true, StatePending, 1, 0)
	tab.Add(Record{Request: "delete-1", Stage: Identity, At: at(10), RequestedAt: at(0), Kind: "anonymous_id", Suppress: true, Identifiers: 3, Entities: 2})
	s = check("delete-1", true, StateInProgress, 1, 0)
	if s.Identifiers != 3 || s.Entities != 2 || s.Stream.Parts != 2 || s.History.Parts != 3 || s.Stream.Done || !s.Identity.Done {
		t.Fatalf("identity done: %+v", s)
	}
	tab.Add(Record{Request: "delete-1", Stage: Stream, At: at(20), Index: 0})
	tab.Add(Record{Request: "delete-1", Stage: Stream, At: at(25), Index: 1}) // a replay
	s = check("delete-1", false, StateDone, 2, 0)
	if !s.DoneAt.Equal(at(25)) {
		t.Fatalf("done at %v, want %v (the last part)", s.DoneAt, at(25))
	}
	check("delete-1", true, StateInProgress, 2, 0)
	for i := range 3 {
		tab.Add(Record{Request: "delete-1", Stage: History, At: at(100 + i), Index: i})
	}
	s = check("delete-1", true, StateDone, 2, 3)
	if !s.DoneAt.Equal(at(102)) {
		t.Fatalf("done at %v, want %v", s.DoneAt, at(102))
	}

	// ClickHouse mutations: one created in the second of the last part
	// or before keeps the history stage running.
	for _, c := range []struct {
		oldest time.Time
		state  string
	}{{time.Time{}, StateDone}, {at(2000), StateDone}, {at(999), StateInProgress}, {at(-5000), StateInProgress}} {
		s, _ := tab.Status("delete-1", true)
		s.SettleMutations(c.oldest)
		if s.State != c.state || s.History.MutationsRunning != (c.state != StateDone) || s.History.Done != (c.state == StateDone) {
			t.Errorf("oldest mutation at %v: %+v, history %+v; want %s", c.oldest, s, s.History, c.state)
		}
	}

	// A person with no entity (an email never linked): done with the
	// identity stage and its history.
	tab.Add(Record{Request: "delete-2", Stage: Identity, At: at(500), RequestedAt: at(400), Kind: "email", Identifiers: 1})
	check("delete-2", false, StateDone, 0, 0)
	tab.Add(Record{Request: "delete-3", Stage: Requested, At: at(300), RequestedAt: at(300)})
	var ids []string
	for _, s := range tab.List(true) {
		ids = append(ids, s.RequestID+":"+s.State)
	}
	if got, want := strings.Join(ids, " "), "delete-2:in_progress delete-3:pending delete-1:done"; got != want {
		t.Errorf("list %s, want %s", got, want)
	}
	if tab.Len() != 3 {
		t.Errorf("len %d", tab.Len())
	}
	if n, oldest := tab.Unfinished(true); n != 2 || !oldest.Equal(at(300)) {
		t.Errorf("unfinished %d, the oldest asked at %v; want 2 and %v", n, oldest, at(300))
	}
	if n, _ := tab.Unfinished(false); n != 1 {
		t.Errorf("unfinished without history %d, want 1 (delete-3)", n)
	}
}
