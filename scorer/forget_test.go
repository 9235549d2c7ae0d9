package scorer_test

import (
	"strings"
	"testing"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/scorer"
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
}

// DELETE /v1/suppressions/{id} (admin) lifts a suppression: a tombstone
// of the id on the suppressions topic.
func TestLiftSuppression(t *testing.T) {
	cfg := newConfig(t, testConfig)
	embeddedKafka(t, cfg)
	h := start(t, cfg, newMemStore(), scorer.WithDeletions(producer(t, cfg)))
	if code, body := h.do("DELETE", "/v1/suppressions/612", "read-key", ""); code != 403 {
		t.Fatalf("a read key: %d %s", code, body)
	}
	if code, body := h.do("DELETE", "/v1/suppressions/612", "admin-key", ""); code != 200 || !strings.Contains(body, `"success":true`) {
		t.Fatalf("lift: %d %s", code, body)
	}
	got := testenv.ConsumeExactly(t, cfg.Kafka.Brokers, cfg.Kafka.Topics.Suppressions, 1)
	if string(got[0].Key) != "612" || got[0].Value != nil {
		t.Fatalf("suppressions topic: %v, want a tombstone of 612", got)
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
