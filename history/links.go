package history

import (
	"context"
	"fmt"
	"time"

	"github.com/pulse-rt/pulse/identity"
)

// Links reads every identity link the history holds (identity_links), each
// (identifier, canonical id, cause) once as FINAL would show it, in no
// particular order: what identity.NewTimeline takes. A history written
// before identity_links existed has none; that is not an error.
func (r *Reader) Links(ctx context.Context) ([]identity.Link, error) {
	// GROUP BY collapses replayed duplicates that merges have not yet
	// collapsed, on the table's sorting key; any() of equal rows is a row.
	rows, err := r.conn.Query(ctx, fmt.Sprintf(
		"SELECT identifier, canonical_id, any(previous_canonical_id), any(kind), message_id, any(at_ms) FROM %s GROUP BY identifier, canonical_id, message_id",
		r.Table(identityLinksTable.name)))
	if err != nil {
		return nil, fmt.Errorf("cannot read identity links: %w", err)
	}
	defer rows.Close()
	var out []identity.Link
	for rows.Next() {
		var l identity.Link
		var kind string
		var ms int64
		if err := rows.Scan(&l.Identifier, &l.CanonicalID, &l.Previous, &kind, &l.MessageID, &ms); err != nil {
			return nil, fmt.Errorf("cannot read identity links: %w", err)
		}
		l.Kind, l.At = identity.LinkKind(kind), time.UnixMilli(ms).UTC()
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot read identity links: %w", err)
	}
	return out, nil
}
