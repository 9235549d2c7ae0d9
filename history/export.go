package history

import (
	"context"
	"fmt"
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/identity"
)

// ExportPerson reads every history row of the person with identifiers ids
// (a data subject's access request: GDPR's right of access and to
// portability, the CCPA's right to know), the rows Forget would delete,
// table by table (identity links, events, segment changes, predictions,
// trait scores), each in time order, once per row (FINAL: replays
// collapsed), and calls each with the table and the row. It returns the
// rows read per table, also when each or the read fails part way.
//
// A row holds the table's columns but the Kafka origin (kafka_partition,
// kafka_offset): a time (a *_ms column) as a UTC time named without _ms
// (the seconds column of the same time is left out), and left out when
// zero; a column holding a JSON object or array (properties, traits,
// context, features...) as that JSON; an empty string left out. Dead
// letters (invalid_events) are not searched: they are kept as sent,
// unparsed.
func (r *Reader) ExportPerson(ctx context.Context, ids []identity.Identifier, each func(table string, row map[string]any) error) (map[string]int, error) {
	counts := map[string]int{}
	where := personRows(ids)
	// Links (personRows's last) first: who the person is, then what it did.
	if k := len(where); k > 1 {
		where = append([]tableWhere{where[k-1]}, where[:k-1]...)
	}
	for _, w := range where {
		n, err := r.exportTable(ctx, w, each)
		counts[w.t.name] = n
		if err != nil {
			return counts, err
		}
	}
	return counts, nil
}

// exportTable reads one table's rows of the person.
func (r *Reader) exportTable(ctx context.Context, w tableWhere, each func(string, map[string]any) error) (int, error) {
	var cols []column
	for _, c := range w.t.columns {
		if c.name == "kafka_partition" || c.name == "kafka_offset" || c.typ == "DateTime" {
			continue
		}
		cols = append(cols, c)
	}
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	order := "at_ms"
	if w.t == &eventsTable {
		order = "timestamp_ms"
	}
	sql := fmt.Sprintf("SELECT %s FROM %s FINAL WHERE %s ORDER BY %s", strings.Join(names, ", "), r.Table(w.t.name), w.cond, order)
	rows, err := r.conn.Query(ctx, sql)
	if err != nil {
		return 0, fmt.Errorf("cannot read %s: %w", w.t.name, err)
	}
	defer rows.Close()
	dest := make([]any, len(cols))
	for i, c := range cols {
		switch c.typ {
		case "String":
			dest[i] = new(string)
		case "Int64":
			dest[i] = new(int64)
		case "Int32":
			dest[i] = new(int32)
		case "UInt8":
			dest[i] = new(uint8)
		case "Nullable(Float64)":
			dest[i] = new(*float64)
		default:
			return 0, fmt.Errorf("cannot export %s.%s: type %s", w.t.name, c.name, c.typ)
		}
	}
	n := 0
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return n, fmt.Errorf("cannot read %s: %w", w.t.name, err)
		}
		row := make(map[string]any, len(cols))
		for i, c := range cols {
			switch v := dest[i].(type) {
			case *string:
				if s := *v; s != "" {
					if (s[0] == '{' || s[0] == '[') && json.Valid([]byte(s)) {
						row[c.name] = json.RawMessage(s)
					} else {
						row[c.name] = s
					}
				}
			case *int64:
				if name, ok := strings.CutSuffix(c.name, "_ms"); ok {
					if *v != 0 {
						row[name] = time.UnixMilli(*v).UTC()
					}
				} else {
					row[c.name] = *v
				}
			case *int32:
				row[c.name] = *v
			case *uint8:
				row[c.name] = *v
			case **float64:
				if *v != nil {
					row[c.name] = **v
				}
			}
		}
		n++
		if err := each(w.t.name, row); err != nil {
			return n, err
		}
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("cannot read %s: %w", w.t.name, err)
	}
	return n, nil
}
