package scorer_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/deletion"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/suppression"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DELETE /v1/profiles/{entity}/{id}: an admin key's request is written to
// the identity requests topic as a forget request naming the identifier
// (a userId by default, ?kind= another kind) and answered 202; the wrong
// key, entity or kind are refused with the reason and write nothing.
func TestDeleteProfile(t *testing.T) {
	cfg := newConfig(t, testConfig)
	embeddedKafka(t, cfg)
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"612": buyer()}, nil)
	h := start(t, cfg, st, scorer.WithDeletions(producer(t, cfg)))

	for _, c := range []struct {
		path, key string
		code      int
		says      string
	}{
		{"/v1/profiles/user/612", "", 401, ""},
		{"/v1/profiles/user/612", "read-key", 403, "admin"},
		{"/v1/profiles/shop/612", "admin-key", 404, "unknown entity type"},
		{"/v1/profiles/user/", "admin-key", 404, "/v1/profiles/{entity}/{id}"},
		{"/v1/profiles/user/612?kind=phone", "admin-key", 400, `kind: unknown identifier kind \"phone\"`},
		{"/v1/profiles/user/612?suppress=maybe", "admin-key", 400, `suppress: want true or false, got \"maybe\"`},
	} {
		code, body := h.do("DELETE", c.path, c.key, "")
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("DELETE %s with %q: %d %s, want %d saying %q", c.path, c.key, code, body, c.code, c.says)
		}
	}
	var answers []scorer.Deletion
	for _, path := range []string{"/v1/profiles/user/612", "/v1/profiles/user/jo@example.com?kind=email", "/v1/profiles/user/anon-1?kind=anonymous_id&suppress=true"} {
		code, body := h.do("DELETE", path, "admin-key", "")
		var d scorer.Deletion
		if err := json.Unmarshal([]byte(body), &d); code != 202 || err != nil || !d.Accepted || !strings.HasPrefix(d.RequestID, "delete-") ||
			d.StatusURL != "/v1/deletions/"+d.RequestID ||
			len(d.Identifiers) != 1 || d.Identifiers[0] != d.Identifier { // no identity table here: the one named
			t.Fatalf("DELETE %s: %d %s (%v)", path, code, body, err)
		}
		answers = append(answers, d)
	}
	if code, body := h.do("POST", "/v1/profiles/user/612", "admin-key", ""); code != 405 {
		t.Errorf("POST: %d %s, want 405", code, body)
	}

	var got []identity.Request
	for _, r := range testenv.ConsumeExactly(t, cfg.Kafka.Brokers, cfg.Kafka.Topics.IdentityRequests, len(answers)) {
		q, err := identity.DecodeRequest(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, q)
	}
	want := []identity.Identifier{identity.User("612"), {Kind: "email", Value: "jo@example.com"}, identity.Anonymous("anon-1")}
	for i, q := range got {
		if q.Kind != identity.KindForget || q.To != want[i] || q.MessageID != answers[i].RequestID || answers[i].Identifier != want[i].String() ||
			q.Suppress != (i == 2) || answers[i].Suppressed != q.Suppress {
			t.Errorf("request %d: %+v (answered %+v), want a forget of %s", i, q, answers[i], want[i])
		}
	}
	// Each deletion's progress starts with the request, naming no one
	// (the topic's partitions: in any order).
	byRequest := map[string]int{}
	for i, a := range answers {
		byRequest[a.RequestID] = i
	}
	for _, r := range testenv.ConsumeExactly(t, cfg.Kafka.Brokers, cfg.Kafka.Topics.Deletions, len(answers)) {
		rec, err := deletion.Decode(r.Value)
		i, ok := byRequest[rec.Request]
		delete(byRequest, rec.Request)
		if err != nil || !ok || rec.Stage != deletion.Requested || string(r.Key) != rec.Request+"/requested" ||
			rec.Kind != want[i].Kind || rec.Suppress != (i == 2) || !rec.RequestedAt.Equal(got[i].At) || names(r.Value, want[i].Value) {
			t.Errorf("deletion record %s %s (%+v, %v), want one per request, as asked", r.Key, r.Value, rec, err)
		}
	}
}

// names reports whether a deletion record's fields name id, leaving out
// its request id (random hex, which may hold the digits of an id: "612"
// was once in "…cd6612b") and its times.
func names(value []byte, id string) bool {
	var m map[string]any
	if err := json.Unmarshal(value, &m); err != nil {
		return true
	}
	for k, v := range m {
		if k != "request_id" && k != "at" && k != "requested_at" && strings.Contains(fmt.Sprint(v), id) {
			return true
		}
	}
	return false
}

// mutations is a history whose oldest running ClickHouse mutation is set
// by the test.
type mutations struct {
	fakeEvents
	mu     sync.Mutex
	oldest time.Time
}

func (m *mutations) OldestRunningMutation(context.Context) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.oldest, nil
}

// GET /v1/deletions/{request_id} and GET /v1/deletions (admin): each
// deletion's progress as read from the deletions topic (on an embedded
// broker), its history stage held in progress while ClickHouse runs a
// mutation created before it finished; the list latest first, by status,
// limited; unknown ids, bad parameters, keys and methods refused.
func TestDeletionStatus(t *testing.T) {
	cfg := newConfig(t, testConfig)
	embeddedKafka(t, cfg)
	cfg.ClickHouse.Addr = "127.0.0.1:9000" // a history is kept: its stage counts
	prod := producer(t, cfg)
	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var recs []*kgo.Record
	for _, r := range []deletion.Record{
		{Request: "d-done", Stage: deletion.Requested, At: at(0), RequestedAt: at(0), Kind: "user_id"},
		{Request: "d-done", Stage: deletion.Identity, At: at(1), RequestedAt: at(0), Kind: "user_id", Identifiers: 2, Entities: 1},
		{Request: "d-done", Stage: deletion.Stream, At: at(2)},
		{Request: "d-done", Stage: deletion.History, At: at(3), Index: 0},
		{Request: "d-done", Stage: deletion.History, At: at(4), Index: 1},
		{Request: "d-half", Stage: deletion.Identity, At: at(11), RequestedAt: at(10), Kind: "email", Suppress: true, Identifiers: 1, Entities: 2},
		{Request: "d-half", Stage: deletion.Stream, At: at(12), Index: 1},
		{Request: "d-new", Stage: deletion.Requested, At: at(20), RequestedAt: at(20), Kind: "anonymous_id"},
	} {
		recs = append(recs, &kgo.Record{Topic: cfg.Kafka.Topics.Deletions, Key: r.Key(), Value: r.Encode()})
	}
	recs = append(recs, &kgo.Record{Topic: cfg.Kafka.Topics.Deletions, Key: []byte("junk"), Value: []byte("{")})
	if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	dels := scorer.NewDeletions(cfg, nil)
	runUntilEnd(t, dels.Run)
	hist := &mutations{}
	h := start(t, cfg, newMemStore(), scorer.WithDeletionStatus(dels), scorer.WithHistory(hist))
	status := func(id string) deletion.Status {
		t.Helper()
		code, body := h.do("GET", "/v1/deletions/"+id, "admin-key", "")
		var s deletion.Status
		if err := json.Unmarshal([]byte(body), &s); code != 200 || err != nil {
			t.Fatalf("GET %s: %d %s (%v)", id, code, body, err)
		}
		return s
	}
	testenv.WaitFor(t, 10*time.Second, "the deletions read", func() bool {
		code, _ := h.do("GET", "/v1/deletions/d-new", "admin-key", "")
		return code == 200
	})
	// The gauges: d-half and d-new unfinished, d-half (asked an hour ago
	// less 10 s) the oldest.
	testenv.WaitFor(t, 15*time.Second, "the deletion gauges", func() bool {
		age := testenv.Gathered(t, "pulse_scorer_deletion_oldest_unfinished_seconds", nil)
		return testenv.Gathered(t, "pulse_scorer_deletions_unfinished", nil) == 2 && age > 3500 && age < 3700
	})
	if s := status("d-done"); s.State != deletion.StateDone || !s.DoneAt.Equal(at(4)) || s.History == nil || s.History.PartsDone != 2 || s.Kind != "user_id" {
		t.Errorf("d-done: %+v", s)
	}
	if s := status("d-half"); s.State != deletion.StateInProgress || s.Stream.Parts != 2 || s.Stream.PartsDone != 1 || !s.Suppressed || s.RequestedAt.IsZero() {
		t.Errorf("d-half: %+v", s)
	}
	if s := status("d-new"); s.State != deletion.StatePending || s.Identity.Done {
		t.Errorf("d-new: %+v", s)
	}
	// A mutation created before d-done's history finished still runs.
	hist.mu.Lock()
	hist.oldest = at(2)
	hist.mu.Unlock()
	if s := status("d-done"); s.State != deletion.StateInProgress || !s.History.MutationsRunning || s.History.Done {
		t.Errorf("d-done with a mutation running: %+v, history %+v", s, s.History)
	}
	hist.mu.Lock()
	hist.oldest = at(5) // a later deletion's
	hist.mu.Unlock()
	if s := status("d-done"); s.State != deletion.StateDone {
		t.Errorf("d-done with a later mutation running: %+v", s)
	}

	list := func(query string) scorer.DeletionList {
		t.Helper()
		code, body := h.do("GET", "/v1/deletions"+query, "admin-key", "")
		var l scorer.DeletionList
		if err := json.Unmarshal([]byte(body), &l); code != 200 || err != nil {
			t.Fatalf("GET /v1/deletions%s: %d %s (%v)", query, code, body, err)
		}
		return l
	}
	ids := func(l scorer.DeletionList) string {
		var out []string
		for _, s := range l.Deletions {
			out = append(out, s.RequestID+":"+s.State)
		}
		return strings.Join(out, " ") + " of " + strconv.Itoa(l.Total)
	}
	for query, want := range map[string]string{
		"":                    "d-new:pending d-half:in_progress d-done:done of 3",
		"?limit=1":            "d-new:pending of 3",
		"?status=done":        "d-done:done of 1",
		"?status=in_progress": "d-half:in_progress of 1",
	} {
		if got := ids(list(query)); got != want {
			t.Errorf("GET /v1/deletions%s: %s, want %s", query, got, want)
		}
	}
	h.checkRefusals([]refusal{
		{"GET", "/v1/deletions/d-done", "read-key", 403, "admin"},
		{"GET", "/v1/deletions", "", 401, ""},
		{"GET", "/v1/deletions/d-nope", "admin-key", 404, `request_id: no deletion \"d-nope\"`},
		{"GET", "/v1/deletions?limit=0", "admin-key", 400, "limit: want a number from 1 to 1000"},
		{"GET", "/v1/deletions?status=gone", "admin-key", 400, `status: want pending, in_progress, done, got \"gone\"`},
		{"DELETE", "/v1/deletions/d-done", "admin-key", 405, "use GET"},
	})
	if code, body := start(t, cfg, newMemStore()).do("GET", "/v1/deletions", "admin-key", ""); code != 503 {
		t.Errorf("without the deletions followed: %d %s, want 503", code, body)
	}
}

// GET /v1/suppressions (admin) lists the suppressed entity ids as read
// from the suppressions topic (an embedded broker), the latest first, with
// the deletion that suppressed each; GET /v1/suppressions/{id} one;
// DELETE /v1/suppressions/{id} lifts one: a tombstone, after which it is
// listed no more.
func TestLiftSuppression(t *testing.T) {
	cfg := newConfig(t, testConfig)
	embeddedKafka(t, cfg)
	prod := producer(t, cfg)
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	for i, id := range []string{"612", "613"} {
		q := identity.Forget(identity.User(id), at.Add(time.Duration(i)*time.Hour), "delete-"+id)
		recs = append(recs, &kgo.Record{Topic: cfg.Kafka.Topics.Suppressions, Key: []byte(id), Value: identity.EncodeSuppression(q)})
	}
	if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	sup := suppression.New(cfg, nil, nil)
	runUntilEnd(t, sup.Run)
	h := start(t, cfg, newMemStore(), scorer.WithDeletions(producer(t, cfg)), scorer.WithSuppressionList(sup))
	list := func() string {
		t.Helper()
		code, body := h.do("GET", "/v1/suppressions", "admin-key", "")
		if code != 200 {
			t.Fatalf("GET /v1/suppressions: %d %s", code, body)
		}
		return body
	}
	testenv.WaitFor(t, 10*time.Second, "both suppressions read", func() bool { return strings.Contains(list(), `"total":2`) })
	if got, want := list(), `{"suppressed":[{"id":"613","at":"2026-12-01T11:00:00Z","request_id":"delete-613"},{"id":"612","at":"2026-12-01T10:00:00Z","request_id":"delete-612"}],"total":2}`; got != want {
		t.Errorf("list %s, want %s", got, want)
	}
	if code, body := h.do("GET", "/v1/suppressions?limit=1", "admin-key", ""); code != 200 || !strings.Contains(body, `"suppressed":[{"id":"613"`) || strings.Contains(body, `"612"`) {
		t.Errorf("limit=1: %d %s", code, body)
	}
	if code, body := h.do("GET", "/v1/suppressions/612", "admin-key", ""); code != 200 || !strings.Contains(body, `"request_id":"delete-612"`) {
		t.Errorf("GET 612: %d %s", code, body)
	}

	h.checkRefusals([]refusal{
		{"DELETE", "/v1/suppressions/612", "read-key", 403, "admin"},
		{"GET", "/v1/suppressions", "read-key", 403, "admin"},
		{"GET", "/v1/suppressions?limit=0", "admin-key", 400, "limit: want a number from 1 to 1000"},
		{"GET", "/v1/suppressions/999", "admin-key", 404, `id: \"999\" is not suppressed`},
		{"POST", "/v1/suppressions/612", "admin-key", 405, "use GET"},
		{"DELETE", "/v1/suppressions", "admin-key", 405, "DELETE /v1/suppressions/{id}"},
	})
	if code, body := h.do("DELETE", "/v1/suppressions/612", "admin-key", ""); code != 200 || !strings.Contains(body, `"success":true`) {
		t.Fatalf("lift: %d %s", code, body)
	}
	var lifted bool
	for _, r := range testenv.ConsumeExactly(t, cfg.Kafka.Brokers, cfg.Kafka.Topics.Suppressions, 3) {
		lifted = lifted || (string(r.Key) == "612" && r.Value == nil)
	}
	if !lifted {
		t.Fatal("suppressions topic: no tombstone of 612")
	}
	testenv.WaitFor(t, 10*time.Second, "612 listed no more", func() bool {
		code, _ := h.do("GET", "/v1/suppressions/612", "admin-key", "")
		return code == 404 && strings.Contains(list(), `"total":1`)
	})
	if code, body := start(t, cfg, newMemStore()).do("GET", "/v1/suppressions", "admin-key", ""); code != 503 {
		t.Errorf("without the list followed: %d %s", code, body)
	}
}

// Without identity resolution (the linker carries a deletion out) or
// without a producer, DELETE says why it cannot.
func TestDeleteProfileRefused(t *testing.T) {
	cfg := newConfig(t, testConfig)
	off := false
	cfg.Identity.Enabled = &off
	h := start(t, cfg, newMemStore())
	if code, body := h.do("DELETE", "/v1/profiles/user/612", "admin-key", ""); code != 409 || !strings.Contains(body, "identity.enabled") {
		t.Errorf("identity off: %d %s, want 409 naming identity.enabled", code, body)
	}
	h = start(t, newConfig(t, testConfig), newMemStore())
	if code, body := h.do("DELETE", "/v1/profiles/user/612", "admin-key", ""); code != 503 {
		t.Errorf("no producer: %d %s, want 503", code, body)
	}
}
