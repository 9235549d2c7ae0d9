package history

import (
	"context"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// column is one column of a table as created and migrated.
type column struct {
	name, typ string
}

// table is one history table: its columns in INSERT order and the engine
// clauses after them.
type table struct {
	name    string
	columns []column
	engine  string
}

// The tables. A new column may go anywhere in a list: Migrate adds it to
// existing tables after its predecessor (with the type's default in old
// rows), and the writer's INSERTs name their columns, so old and new servers
// agree. kafka_partition and kafka_offset stay last (origin in rows.go).
var (
	eventsTable = table{
		name: "events",
		columns: []column{
			{"message_id", "String"},
			{"type", "String"},
			{"event", "String"}, // track: the event name
			{"name", "String"},  // page, screen
			{"user_id", "String"},
			{"anonymous_id", "String"},
			{"entity_id", "String"}, // user_id, else anonymous_id: the user entity's id
			{"previous_id", "String"},
			{"group_id", "String"},
			{"timestamp", "DateTime"},
			{"timestamp_ms", "Int64"},
			{"received_at", "DateTime"},
			{"received_at_ms", "Int64"},
			{"sent_at_ms", "Int64"},            // 0 when not sent
			{"original_timestamp_ms", "Int64"}, // 0 when not sent
			{"properties", "String"},           // JSON object, "{}" when absent
			{"traits", "String"},
			{"context", "String"},
			{"integrations", "String"},
			{"feature_set", "String"},
			{"revenue", "Nullable(Float64)"},
			{"total", "Nullable(Float64)"},
			{"order_id", "String"},
			{"product_id", "String"},
			{"kafka_partition", "Int32"},
			{"kafka_offset", "Int64"},
		},
		engine: "ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY (entity_id, message_id)",
	}
	invalidTable = table{
		name: "invalid_events",
		columns: []column{
			{"message_id", "String"},
			{"error", "String"},
			{"field", "String"},
			{"item_index", "Int32"}, // the item's index in its batch
			{"source", "String"},    // ingest, stream, or history when the writer could not read a record
			{"reason", "String"},    // invalid, late or unreadable (event.Reason*); empty in older rows
			{"key_name", "String"},
			{"received_at", "DateTime"},
			{"received_at_ms", "Int64"},
			{"event", "String"}, // the rejected JSON as sent (a JSON string when it was not JSON)
			// Where the refused record was read from (stream, history); empty
			// for ingest, which refuses before Kafka. kafka_* below is where
			// the dead letter itself sat.
			{"input_topic", "String"},
			{"input_partition", "Int32"},
			{"input_offset", "Int64"},
			{"kafka_topic", "String"},
			{"kafka_partition", "Int32"},
			{"kafka_offset", "Int64"},
		},
		engine: "ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(received_at) ORDER BY message_id",
	}
	segmentsTable = table{
		name: "segment_changes",
		columns: []column{
			{"change_id", "String"},
			{"segment", "String"},
			{"entity", "String"},
			{"entity_id", "String"},
			{"change", "String"}, // enter or exit
			{"at", "DateTime"},
			{"at_ms", "Int64"},
			{"features", "String"}, // JSON object, "{}" when absent
			{"kafka_partition", "Int32"},
			{"kafka_offset", "Int64"},
		},
		engine: "ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(at) ORDER BY (segment, entity_id, change_id)",
	}
	predictionsTable = table{
		name: "predictions",
		columns: []column{
			{"uuid", "String"},
			{"model", "String"},
			{"version", "String"},
			{"entity", "String"},
			{"entity_id", "String"},
			{"features", "String"},         // JSON object of the inputs
			{"score", "Nullable(Float64)"}, // the score, or the first class's probability
			{"scores", "String"},           // the score as sent (JSON): arrays for multiclass
			{"prediction", "String"},       // the label, or the prediction's JSON when not a string
			{"model_used", "UInt8"},        // 0 when the default was answered
			{"at", "DateTime"},
			{"at_ms", "Int64"},
			{"kafka_partition", "Int32"},
			{"kafka_offset", "Int64"},
		},
		engine: "ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(at) ORDER BY (model, entity_id, uuid)",
	}
	// identityLinksTable holds every identity.Link the linker wrote: from at
	// on, identifier counted for canonical_id. The backfill's point-in-time
	// rule reads it (identity.Timeline); analysts see who was merged when,
	// and by which event.
	identityLinksTable = table{
		name: "identity_links",
		columns: []column{
			{"identifier", "String"},   // typed: user_id:U, anonymous_id:A, email:e
			{"canonical_id", "String"}, // the entity id the person's features are kept under
			{"previous_canonical_id", "String"},
			{"kind", "String"},       // identify or alias
			{"message_id", "String"}, // the cause event's messageId
			{"at", "DateTime"},       // the cause event's time
			{"at_ms", "Int64"},
			{"kafka_partition", "Int32"},
			{"kafka_offset", "Int64"},
		},
		engine: "ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(at) ORDER BY (identifier, canonical_id, message_id)",
	}
	// traitScoresTable: the stream's predictive trait scores as they
	// change (pulse.traits, model.TraitScore).
	traitScoresTable = table{
		name: "trait_scores",
		columns: []column{
			{"change_id", "String"},
			{"trait", "String"},
			{"model", "String"},
			{"version", "String"},
			{"entity", "String"},
			{"entity_id", "String"},
			{"score", "Nullable(Float64)"},
			{"at", "DateTime"},
			{"at_ms", "Int64"},
			{"kafka_partition", "Int32"},
			{"kafka_offset", "Int64"},
		},
		engine: "ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(at) ORDER BY (trait, entity_id, at_ms, change_id)",
	}
	tables = []*table{&eventsTable, &invalidTable, &segmentsTable, &predictionsTable, &identityLinksTable, &traitScoresTable}
)

func (t *table) columnList() string {
	names := make([]string, len(t.columns))
	for i, c := range t.columns {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

func (t *table) createSQL(db string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s.%s (\n", quoteIdent(db), t.name)
	for i, c := range t.columns {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, "    %s %s", c.name, c.typ)
	}
	fmt.Fprintf(&b, "\n) %s", t.engine)
	return b.String()
}

func (t *table) insertSQL(db string) string {
	return fmt.Sprintf("INSERT INTO %s.%s (%s)", quoteIdent(db), t.name, t.columnList())
}

// Migrate creates the database and the tables, and adds columns that newer
// versions of Pulse define to tables an older one created. It is idempotent
// and safe to run from several writers at once.
func Migrate(ctx context.Context, conn driver.Conn, db string) error {
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(db)); err != nil {
		return fmt.Errorf("cannot create database %s: %w", db, err)
	}
	for _, t := range tables {
		if err := conn.Exec(ctx, t.createSQL(db)); err != nil {
			return fmt.Errorf("cannot create table %s.%s: %w", db, t.name, err)
		}
		have, err := columnsOf(ctx, conn, db, t.name)
		if err != nil {
			return err
		}
		prev := ""
		for _, c := range t.columns {
			if _, ok := have[c.name]; !ok {
				sql := fmt.Sprintf("ALTER TABLE %s.%s ADD COLUMN %s %s", quoteIdent(db), t.name, c.name, c.typ)
				if prev != "" {
					sql += " AFTER " + prev
				}
				// A concurrent writer may have added it first.
				if err := conn.Exec(ctx, sql); err != nil && !strings.Contains(err.Error(), "already exists") {
					return fmt.Errorf("cannot add column %s to %s.%s: %w", c.name, db, t.name, err)
				}
			}
			prev = c.name
		}
	}
	return nil
}

func columnsOf(ctx context.Context, conn driver.Conn, db, tbl string) (map[string]string, error) {
	rows, err := conn.Query(ctx, "SELECT name, type FROM system.columns WHERE database = ? AND table = ?", db, tbl)
	if err != nil {
		return nil, fmt.Errorf("cannot list columns of %s.%s: %w", db, tbl, err)
	}
	defer rows.Close()
	have := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return nil, err
		}
		have[name] = typ
	}
	return have, rows.Err()
}

// quoteIdent quotes a database or table name for ClickHouse.
func quoteIdent(s string) string {
	return "`" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "`", "\\`") + "`"
}
