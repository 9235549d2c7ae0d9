package scorer_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/scorer"
)

// exporter is a history holding two rows of user 612 (a link and an
// event), and failing after the first row when fail is set.
type exporter struct {
	fakeEvents
	mu   sync.Mutex
	ids  [][]string
	fail bool
}

func (x *exporter) ExportPerson(_ context.Context, ids []identity.Identifier, each func(string, map[string]any) error) (map[string]int, error) {
	x.mu.Lock()
	var asked []string
	for _, id := range ids {
		asked = append(asked, id.String())
	}
	x.ids = append(x.ids, asked)
	fail := x.fail
	x.mu.Unlock()
	rows := map[string]int{"identity_links": 0, "events": 0}
	if !slices.Contains(asked, "user_id:612") {
		return rows, nil
	}
	if err := each("identity_links", map[string]any{"identifier": "user_id:612", "canonical_id": "612"}); err != nil {
		return rows, err
	}
	rows["identity_links"]++
	if fail {
		return rows, errors.New("clickhouse went away")
	}
	if err := each("events", map[string]any{"message_id": "m1", "event": "Order Completed", "properties": json.RawMessage(`{"revenue":5}`)}); err != nil {
		return rows, err
	}
	rows["events"]++
	return rows, nil
}

// exportLines reads an export's JSON lines, each as a map.
func exportLines(t *testing.T, body string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// GET /v1/exports/{entity}/{id} (admin): the person's export as JSON
// lines (whom, the online profile, each history row, a summary), searched
// by its identifiers (here, with no identity table, the userId and the
// anonymousId of the same value); a person the store does not hold has
// no profile line; a history failing part way or missing makes the
// summary say incomplete and why; keys, entity, kind and method refused.
func TestExportPerson(t *testing.T) {
	cfg := newConfig(t, testConfig)
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"612": buyer()}, map[string][]string{"612": {"big_spenders"}})
	hist := &exporter{}
	var logged lockedBuffer
	h := start(t, cfg, st, scorer.WithHistory(hist), scorer.WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))

	resp, err := http.Get(h.url + "/v1/exports/user/612?api_key=admin-key")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "application/x-ndjson" || !strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("export: %d, content type %q, disposition %q", resp.StatusCode, ct, resp.Header.Get("Content-Disposition"))
	}
	code, body := h.do("GET", "/v1/exports/user/612", "admin-key", "")
	lines := exportLines(t, body)
	var types []string
	for _, l := range lines {
		types = append(types, l["type"].(string))
	}
	if code != 200 || strings.Join(types, " ") != "export profile row row summary" {
		t.Fatalf("export: %d %s", code, body)
	}
	head, profile, sum := lines[0], lines[1], lines[4]
	if head["identifier"] != "user_id:612" || !strings.Contains(body, `"identifiers":["user_id:612","anonymous_id:612"]`) || head["exported_at"] == "" {
		t.Errorf("header %v", head)
	}
	feats, _ := profile["features"].(map[string]any)
	if profile["id"] != "612" || feats["revenue_30d"] != 640.0 || !strings.Contains(body, `"segments":["big_spenders"]`) {
		t.Errorf("profile %v", profile)
	}
	if lines[2]["table"] != "identity_links" || lines[3]["table"] != "events" || !strings.Contains(body, `"properties":{"revenue":5}`) {
		t.Errorf("rows %v %v", lines[2], lines[3])
	}
	if sum["complete"] != true || sum["error"] != nil || !strings.Contains(body, `"rows":{"events":1,"identity_links":1}`) {
		t.Errorf("summary %v", sum)
	}

	// The audit line: who exported whom.
	testenv.WaitFor(t, 5*time.Second, "the export's audit line", func() bool {
		l := logged.String()
		return strings.Contains(l, `msg="person exported"`) && strings.Contains(l, "identifier=user_id:612 ") && strings.Contains(l, "complete=true key=admin")
	})

	// A person neither the store nor the history holds: whom, and no rows.
	code, body = h.do("GET", "/v1/exports/user/jo@example.com?kind=email", "admin-key", "")
	if lines = exportLines(t, body); code != 200 || len(lines) != 2 || lines[0]["identifier"] != "email:jo@example.com" || lines[1]["complete"] != true {
		t.Errorf("export of no one: %d %s", code, body)
	}

	hist.mu.Lock()
	hist.fail = true
	hist.mu.Unlock()
	code, body = h.do("GET", "/v1/exports/user/612", "admin-key", "")
	lines = exportLines(t, body)
	if sum := lines[len(lines)-1]; code != 200 || len(lines) != 4 || sum["complete"] != false || !strings.Contains(body, `"error":"the history did not answer: clickhouse went away"`) {
		t.Errorf("export with the history failing: %d %s", code, body)
	}

	code, body = start(t, cfg, st).do("GET", "/v1/exports/user/612", "admin-key", "")
	if lines = exportLines(t, body); code != 200 || len(lines) != 3 || lines[2]["complete"] != false || !strings.Contains(lines[2]["error"].(string), "history") {
		t.Errorf("export without a history: %d %s", code, body)
	}

	h.checkRefusals([]refusal{
		{"GET", "/v1/exports/user/612", "read-key", 403, "admin"},
		{"GET", "/v1/exports/user/612", "", 401, ""},
		{"GET", "/v1/exports/shop/612", "admin-key", 404, "unknown entity type"},
		{"GET", "/v1/exports/user/", "admin-key", 404, "use GET /v1/exports/{entity}/{id}, e.g. /v1/exports/user/612"},
		{"GET", "/v1/exports/user/612?kind=phone", "admin-key", 400, `kind: unknown identifier kind \"phone\"`},
		{"POST", "/v1/exports/user/612", "admin-key", 405, "use GET"},
	})
	hist.mu.Lock()
	defer hist.mu.Unlock()
	if len(hist.ids) != 4 {
		t.Errorf("the history was asked %d times, want 4 (the refused requests ask nothing): %v", len(hist.ids), hist.ids)
	}
}

// lockedBuffer is a log's output, written by the server's goroutines and
// read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
