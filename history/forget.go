package history

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/pulse-rt/pulse/identity"
)

// Forget deletes from the history every row of the identifiers ids (a
// person deleted on request: the linker's tombstones on pulse.identity):
// their events (as userId, anonymousId or previousId), segment changes,
// predictions, trait scores and identity links (as the identifier, or as
// the canonical id of another's). Trait identifiers (email:...) have no
// rows of their own but their links: a person's events are found by its
// userIds and anonymousIds, which the linker tombstones with them.
//
// Each table takes one ALTER TABLE ... DELETE (a ClickHouse mutation: it
// runs in the background, rewriting the parts that hold such rows; the
// rows stop being read once it is done, system.mutations says when).
// Forget is idempotent. Rows inserted after it (a history writer replaying
// older records) are not deleted: docs/identity.md, "Deleting a person".
func Forget(ctx context.Context, conn driver.Conn, db string, ids []identity.Identifier) error {
	var users, anons, all, entities []string
	for _, id := range ids {
		all = append(all, id.String())
		switch id.Kind {
		case identity.KindUser:
			users = append(users, id.Value)
		case identity.KindAnonymous:
			anons = append(anons, id.Value)
		default:
			continue
		}
		entities = append(entities, id.Value)
	}
	if len(all) == 0 {
		return nil
	}
	slices.Sort(entities)
	entities = slices.Compact(entities)
	var stmts []string
	if len(entities) > 0 {
		var cond []string
		if len(users) > 0 {
			cond = append(cond, "user_id IN "+inList(users))
		}
		if len(anons) > 0 {
			cond = append(cond, "anonymous_id IN "+inList(anons))
		}
		cond = append(cond, "previous_id IN "+inList(entities))
		stmts = append(stmts, deleteWhere(db, eventsTable.name, strings.Join(cond, " OR ")))
		for _, t := range []*table{&segmentsTable, &predictionsTable, &traitScoresTable} {
			stmts = append(stmts, deleteWhere(db, t.name, "entity_id IN "+inList(entities)))
		}
	}
	cond := "identifier IN " + inList(all)
	if len(entities) > 0 {
		cond += " OR canonical_id IN " + inList(entities)
	}
	stmts = append(stmts, deleteWhere(db, identityLinksTable.name, cond))
	for _, s := range stmts {
		if err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("cannot delete forgotten rows: %w", err)
		}
	}
	return nil
}

func deleteWhere(db, table, cond string) string {
	return "ALTER TABLE " + quoteIdent(db) + "." + quoteIdent(table) + " DELETE WHERE " + cond
}

// inList is ('a','b'), for IN.
func inList(vs []string) string { return "(" + stringList(vs) + ")" }

// forgetMemory is when each entity id was deleted on request (its
// tombstone's time on pulse.identity), for forgetMemoryFor after: rows of
// it from before then that the writer reads after the tombstone (a
// backlog on another topic) are not inserted. It lives in the writer's
// memory only: a restart forgets it (docs/identity.md).
type forgetMemory struct {
	at map[string]time.Time
}

// forgetMemoryFor is how long the writer remembers a deletion.
const forgetMemoryFor = 24 * time.Hour

// add remembers id deleted at at, and forgets deletions over
// forgetMemoryFor older.
func (m *forgetMemory) add(id string, at time.Time) {
	if m.at == nil {
		m.at = map[string]time.Time{}
	}
	for k, t := range m.at {
		if at.Sub(t) > forgetMemoryFor {
			delete(m.at, k)
		}
	}
	if at.After(m.at[id]) {
		m.at[id] = at
	}
}

// before reports whether a row of id from t predates id's deletion.
func (m *forgetMemory) before(id string, t time.Time) bool {
	if m == nil || len(m.at) == 0 || id == "" {
		return false
	}
	d, ok := m.at[id]
	return ok && !t.After(d)
}
