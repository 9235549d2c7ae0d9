package history

import (
	"context"
	"fmt"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/event"
)

// RecentEvents reads the n latest events (by event time) of the entity
// ids, newest first, each message_id once: a person's recent activity
// across its linked ids (GET /v1/profiles?events=N). The maps come as
// their stored JSON; context and integrations are left out.
func (r *Reader) RecentEvents(ctx context.Context, ids []string, n int) ([]event.Raw, error) {
	if len(ids) == 0 || n <= 0 {
		return nil, nil
	}
	// The events table's sorting key starts with entity_id: the IN list
	// reads only those ids' ranges. LIMIT 1 BY collapses replays that
	// merges have not yet collapsed.
	sql := fmt.Sprintf(`SELECT message_id, type, event, name, user_id, anonymous_id, previous_id, group_id,
		timestamp_ms, received_at_ms, properties, traits
	FROM %s WHERE entity_id IN (%s)
	ORDER BY timestamp_ms DESC, message_id
	LIMIT 1 BY message_id
	LIMIT %d`, r.Table(eventsTable.name), stringList(ids), n)
	rows, err := r.conn.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("cannot read recent events: %w", err)
	}
	defer rows.Close()
	var out []event.Raw
	for rows.Next() {
		var e event.Raw
		var typ, props, traits string
		var ts, recv int64
		if err := rows.Scan(&e.MessageID, &typ, &e.Event, &e.Name, &e.UserID, &e.AnonymousID, &e.PreviousID, &e.GroupID,
			&ts, &recv, &props, &traits); err != nil {
			return nil, fmt.Errorf("cannot read recent events: %w", err)
		}
		e.Type = event.Type(typ)
		e.Timestamp, e.ReceivedAt = time.UnixMilli(ts).UTC(), time.UnixMilli(recv).UTC()
		e.Properties, e.Traits = json.RawMessage(props), json.RawMessage(traits)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot read recent events: %w", err)
	}
	return out, nil
}

// LatestTraits folds the identify traits of the entity ids into the
// latest value of each trait by event time (ties: the later message id),
// over their 1000 latest identifies: a person's traits merged across its
// linked ids.
func (r *Reader) LatestTraits(ctx context.Context, ids []string) (map[string]any, error) {
	out := map[string]any{}
	if len(ids) == 0 {
		return out, nil
	}
	sql := fmt.Sprintf(`SELECT traits FROM %s
	WHERE entity_id IN (%s) AND type = 'identify' AND traits != '{}'
	ORDER BY timestamp_ms DESC, message_id DESC
	LIMIT 1 BY message_id
	LIMIT 1000`, r.Table(eventsTable.name), stringList(ids))
	rows, err := r.conn.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("cannot read traits: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var traits string
		if err := rows.Scan(&traits); err != nil {
			return nil, fmt.Errorf("cannot read traits: %w", err)
		}
		var m map[string]any
		if json.Unmarshal([]byte(traits), &m) != nil {
			continue
		}
		for k, v := range m {
			if _, ok := out[k]; !ok { // newest first: the first seen is the latest
				out[k] = v
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot read traits: %w", err)
	}
	return out, nil
}
