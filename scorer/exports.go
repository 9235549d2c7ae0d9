package scorer

import (
	"bufio"
	"context"
	"errors"
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/identity"
	"github.com/valyala/fasthttp"
)

// PersonExporter is what the history reader adds for GET /v1/exports: every
// history row of a person (history.Reader.ExportPerson).
type PersonExporter interface {
	ExportPerson(ctx context.Context, ids []identity.Identifier, each func(table string, row map[string]any) error) (map[string]int, error)
}

// The lines of an export (GET /v1/exports/{entity}/{id}), JSON lines, in
// this order: one ExportHeader, an ExportProfile when the online store
// holds the person, an ExportRow per history row, one ExportSummary.
type (
	// ExportHeader says whom the export is of.
	ExportHeader struct {
		Type        string    `json:"type"` // "export"
		Identifier  string    `json:"identifier"`
		CanonicalID string    `json:"canonical_id,omitempty"`
		Identifiers []string  `json:"identifiers"` // the person's, as the export searched them
		ExportedAt  time.Time `json:"exported_at"`
	}
	// ExportProfile is the person's features and segments now, as
	// GET /v1/entities answers them.
	ExportProfile struct {
		Type string `json:"type"` // "profile"
		Entity
	}
	// ExportRow is one history row of the person.
	ExportRow struct {
		Type  string         `json:"type"` // "row"
		Table string         `json:"table"`
		Row   map[string]any `json:"row"`
	}
	// ExportSummary ends an export: the rows per table, and whether it is
	// complete (Error says why not: no history, or it failed part way).
	ExportSummary struct {
		Type     string         `json:"type"` // "summary"
		Rows     map[string]int `json:"rows"`
		Complete bool           `json:"complete"`
		Error    string         `json:"error,omitempty"`
	}
)

// exportWait bounds an export's read of the history.
const exportWait = 5 * time.Minute

// export answers GET /v1/exports/{entity}/{id} (admin): everything Pulse
// keeps of the person the id belongs to (an access request: GDPR's right
// of access and to portability, the CCPA's right to know), streamed as
// JSON lines: the rows of the tables a deletion deletes from, found by the
// same identifiers, and its online profile.
func (s *Server) export(ctx *fasthttp.RequestCtx, rest string) {
	key, ok := s.authorizeKey(ctx, config.ScopeAdmin, "")
	if !ok {
		return
	}
	subject, ok := s.subject(ctx, rest, "GET /v1/exports")
	if !ok {
		return
	}
	kind, _, _ := strings.Cut(rest, "/")
	canon, links := s.personOf(subject)
	var ids []identity.Identifier
	for _, l := range links {
		if id, err := identity.ParseIdentifier(l.Identifier); err == nil {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 { // never linked: itself, and a userId as an anonymousId too
		ids = append(ids, subject)
		if subject.Kind == identity.KindUser {
			ids = append(ids, identity.Anonymous(subject.Value))
		}
	}
	head := ExportHeader{Type: "export", Identifier: subject.String(), CanonicalID: canon, Identifiers: make([]string, len(ids)), ExportedAt: s.now().UTC()}
	for i, id := range ids {
		head.Identifiers[i] = id.String()
	}
	var profile *ExportProfile
	if lookup := canon; lookup != "" || subject.Entity() {
		if lookup == "" {
			lookup = subject.Value
		}
		v, err := s.store.Get(storeCtx, kind, lookup)
		if err == nil {
			var e Entity
			if e, err = s.entityOf(kind, lookup, v); err == nil {
				profile = &ExportProfile{Type: "profile", Entity: e}
			}
		}
		if err != nil && !errors.Is(err, featurestore.ErrNotFound) {
			s.storeError(ctx, err)
			return
		}
	}
	exporter, _ := s.events.(PersonExporter)
	ctx.SetContentType("application/x-ndjson")
	ctx.Response.Header.Set("Content-Disposition", `attachment; filename="pulse-export.jsonl"`)
	log, by := s.log, keyName(key)
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		enc := json.NewEncoder(w)
		// A write error is the client gone: the rest is not read.
		if enc.Encode(head) != nil || (profile != nil && enc.Encode(profile) != nil) {
			return
		}
		sum := ExportSummary{Type: "summary", Rows: map[string]int{}}
		if exporter == nil {
			sum.Error = ErrNoHistory.Error()
		} else {
			hctx, cancel := context.WithTimeout(context.Background(), exportWait)
			defer cancel()
			rows, err := exporter.ExportPerson(hctx, ids, func(table string, row map[string]any) error {
				return enc.Encode(ExportRow{Type: "row", Table: table, Row: row})
			})
			if rows != nil {
				sum.Rows = rows
			}
			switch {
			case errors.Is(err, ErrNoHistory):
				sum.Error = err.Error()
			case err != nil:
				log.Warn("export: the history's rows not all read", "identifier", head.Identifier, "err", err)
				sum.Error = "the history did not answer: " + err.Error()
			}
		}
		sum.Complete = sum.Error == ""
		_ = enc.Encode(sum)
		// An audit line: who exported whom (no personal data but the id asked by).
		log.Info("person exported", "identifier", head.Identifier, "rows", sum.Rows, "complete", sum.Complete, "key", by)
	})
}
