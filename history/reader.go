package history

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/event"
)

// Reader reads the history back: events per entity in time order for
// backfills and training sets. It is safe for concurrent use.
type Reader struct {
	conn driver.Conn
	db   string
}

// NewReader reads from database db through conn.
func NewReader(conn driver.Conn, db string) *Reader { return &Reader{conn: conn, db: db} }

// Conn is the connection the Reader reads through.
func (r *Reader) Conn() driver.Conn { return r.conn }

// Database is the history database's name.
func (r *Reader) Database() string { return r.db }

// Table is a table of the history database, quoted for SQL.
func (r *Reader) Table(name string) string { return quoteIdent(r.db) + "." + quoteIdent(name) }

// Maps says which of an event's JSON maps to decode; the others stay nil.
// Decoding is most of a replay's cost, so a backfill asks only for the maps
// its features read.
type Maps struct {
	Properties, Traits, Context, Integrations bool
}

// AllMaps decodes every map.
var AllMaps = Maps{true, true, true, true}

// EventFilter selects the events to replay.
type EventFilter struct {
	// Since and Until bound the event time: Since <= timestamp < Until.
	// Zero values leave that side open.
	Since, Until time.Time
	// Entities, when set, restricts the read to these entity ids.
	Entities []string
	// Shards splits the read into this many queries by a hash of the entity
	// id, so ClickHouse sorts a slice of the history at a time. 0 picks one
	// shard per million events.
	Shards int
	Maps   Maps
}

// EachEntity calls fn once per entity with the entity's events in time
// order (ties by receive time, then message id), each message_id once, as
// FINAL would show them. Entities come in no particular order. fn must not
// keep events after it returns; its error stops the read and is returned.
func (r *Reader) EachEntity(ctx context.Context, f EventFilter, fn func(id string, events []*event.Event) error) error {
	where := []string{"1"}
	var args []any
	if !f.Since.IsZero() {
		where = append(where, "timestamp_ms >= ?")
		args = append(args, f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		where = append(where, "timestamp_ms < ?")
		args = append(args, f.Until.UnixMilli())
	}
	if f.Entities != nil {
		if len(f.Entities) == 0 {
			return nil
		}
		where = append(where, "entity_id IN ("+stringList(f.Entities)+")")
	}
	shards := f.Shards
	if shards <= 0 {
		var n uint64
		sql := fmt.Sprintf("SELECT count() FROM %s WHERE %s", r.Table("events"), strings.Join(where, " AND "))
		if err := r.conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			return fmt.Errorf("cannot count events: %w", err)
		}
		shards = max(1, int(n/1_000_000))
	}
	mapCol := func(name string, want bool) string {
		if want {
			return name
		}
		return "''"
	}
	cols := strings.Join([]string{"entity_id", "message_id", "type", "event", "name", "user_id", "anonymous_id",
		"previous_id", "group_id", "timestamp_ms", "received_at_ms", "sent_at_ms", "original_timestamp_ms", "feature_set",
		mapCol("properties", f.Maps.Properties), mapCol("traits", f.Maps.Traits),
		mapCol("context", f.Maps.Context), mapCol("integrations", f.Maps.Integrations)}, ", ")
	for k := range shards {
		w := where
		if shards > 1 {
			w = append(w[:len(w):len(w)], fmt.Sprintf("cityHash64(entity_id) %% %d = %d", shards, k))
		}
		sql := fmt.Sprintf("SELECT %s FROM %s WHERE %s ORDER BY entity_id, timestamp_ms, received_at_ms, message_id",
			cols, r.Table("events"), strings.Join(w, " AND "))
		if err := r.scanEntities(ctx, sql, args, fn); err != nil {
			return err
		}
	}
	return nil
}

func (r *Reader) scanEntities(ctx context.Context, sql string, args []any, fn func(string, []*event.Event) error) error {
	rows, err := r.conn.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("cannot read events: %w", err)
	}
	defer rows.Close()
	var (
		cur                        string
		evs                        []*event.Event
		pool                       []event.Event
		seen                       = map[string]struct{}{}
		entity                     string
		typ                        string
		ts, recv, sent, orig       int64
		props, traits, ctxj, integ string
	)
	flush := func() error {
		if len(evs) == 0 {
			return nil
		}
		err := fn(cur, evs)
		evs = evs[:0]
		pool = pool[:0]
		clear(seen)
		return err
	}
	for rows.Next() {
		if len(pool) == cap(pool) {
			pool = make([]event.Event, 0, max(64, 2*cap(pool))) // events handed out keep the old array
		}
		pool = pool[:len(pool)+1]
		e := &pool[len(pool)-1]
		*e = event.Event{}
		if err := rows.Scan(&entity, &e.MessageID, &typ, &e.Event, &e.Name, &e.UserID, &e.AnonymousID,
			&e.PreviousID, &e.GroupID, &ts, &recv, &sent, &orig, &e.FeatureSet, &props, &traits, &ctxj, &integ); err != nil {
			return fmt.Errorf("cannot read event row: %w", err)
		}
		if entity != cur {
			if err := flush(); err != nil {
				return err
			}
			cur = entity
			pool = pool[:0]
			pool = pool[:1]
			pool[0] = *e
			e = &pool[0]
		}
		if _, dup := seen[e.MessageID]; dup {
			pool = pool[:len(pool)-1]
			continue
		}
		seen[e.MessageID] = struct{}{}
		e.Type = event.Type(typ)
		e.Timestamp = time.UnixMilli(ts).UTC()
		e.ReceivedAt = time.UnixMilli(recv).UTC()
		if sent != 0 {
			e.SentAt = time.UnixMilli(sent).UTC()
		}
		if orig != 0 {
			e.OriginalTimestamp = time.UnixMilli(orig).UTC()
		}
		e.Properties = decodeMap(props)
		e.Traits = decodeMap(traits)
		e.Context = decodeMap(ctxj)
		e.Integrations = decodeMap(integ)
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("cannot read events: %w", err)
	}
	return flush()
}

// decodeMap reads a stored JSON object; "" (not selected) and "{}" are nil,
// as in an event that had no such map.
func decodeMap(s string) map[string]any {
	if len(s) <= 2 {
		return nil
	}
	var m map[string]any
	if json.Unmarshal([]byte(s), &m) != nil {
		return nil
	}
	return m
}

// ParseTime reads a label or flag time: epoch milliseconds, ISO-8601, or
// ClickHouse's "2006-01-02 15:04:05" (UTC when no zone is given).
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms).UTC(), nil
	}
	return event.ParseTime(s)
}

// stringList is a list of SQL string literals. (clickhouse-go binds a slice
// as an array, which 18.16's IN refuses.)
func stringList(ss []string) string {
	var b strings.Builder
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('\'')
		b.WriteString(strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s))
		b.WriteByte('\'')
	}
	return b.String()
}
