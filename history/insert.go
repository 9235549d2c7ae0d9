package history

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/identity"
	"github.com/twmb/franz-go/pkg/kgo"
)

// InsertEvents writes events straight into the events table, as the Writer
// would have from pulse.events (imports of old data, tests). Events without
// a messageId get "import/0/<index>". Their kafka_partition is -1: they
// never went through the stream, so no backfill seed counts them (a direct
// backfill does).
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
		rows.partition[len(rows.partition)-1] = -1
	}
	if rows.len() == 0 {
		return nil
	}
	return insertColumns(ctx, conn, eventsTable.insertSQL(db), rows.columns())
}

// InsertLinks writes identity links straight into identity_links, as the
// Writer would have from pulse.identity (imports of another system's
// identity graph, tests). Their kafka_partition is -1.
func InsertLinks(ctx context.Context, conn driver.Conn, db string, links []identity.Link) error {
	var rows linkRows
	for i, l := range links {
		b, err := identity.EncodeLink(l)
		if err != nil {
			return fmt.Errorf("link %d: %w", i, err)
		}
		if err := rows.addLink(&kgo.Record{Topic: "import", Offset: int64(i), Value: b}); err != nil {
			return fmt.Errorf("link %d: %w", i, err)
		}
		rows.partition[len(rows.partition)-1] = -1
	}
	if rows.len() == 0 {
		return nil
	}
	return insertColumns(ctx, conn, identityLinksTable.insertSQL(db), rows.columns())
}
