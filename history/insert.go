package history

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/pulse-rt/pulse/event"
	"github.com/twmb/franz-go/pkg/kgo"
)

// InsertEvents writes events straight into the events table, as the Writer
// would have from pulse.events (imports of old data, tests). Events without
// a messageId get "import/0/<index>".
func InsertEvents(ctx context.Context, conn driver.Conn, db string, events []*event.Event) error {
	var rows eventRows
	for i, e := range events {
		b, err := e.Marshal()
		if err != nil {
			return fmt.Errorf("cannot encode event %d: %w", i, err)
		}
		if err := rows.addEvent(&kgo.Record{Topic: "import", Offset: int64(i), Value: b}); err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
	}
	if rows.len() == 0 {
		return nil
	}
	return insertColumns(ctx, conn, eventsTable.insertSQL(db), rows.columns())
}
