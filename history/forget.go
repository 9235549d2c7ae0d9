package history

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/pulse-rt/pulse/deletion"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
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
// Forget is idempotent. Rows inserted after it are not deleted: the
// writer leaves out those of a deleted id from before its deletion for a
// while (forgetMemory); a history rebuilt from older records later needs
// the deletion again (docs/identity.md, "Deleting a person").
func Forget(ctx context.Context, conn driver.Conn, db string, ids []identity.Identifier) error {
	for _, w := range personRows(ids) {
		if err := conn.Exec(ctx, deleteWhere(db, w.t.name, w.cond)); err != nil {
			return fmt.Errorf("cannot delete forgotten rows: %w", err)
		}
	}
	return nil
}

// tableWhere is a table and the condition its rows of a person meet.
type tableWhere struct {
	t    *table
	cond string
}

// personRows are the conditions of the rows of the person with
// identifiers ids, by table: what Forget deletes and ExportPerson reads.
// Events are the person's as userId, anonymousId or previousId; segment
// changes, predictions and trait scores, its entities'; identity links,
// its identifiers' and those naming one of its entities canonical (last).
// None when ids is empty.
func personRows(ids []identity.Identifier) []tableWhere {
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
	var out []tableWhere
	if len(entities) > 0 {
		var cond []string
		if len(users) > 0 {
			cond = append(cond, "user_id IN "+inList(users))
		}
		if len(anons) > 0 {
			cond = append(cond, "anonymous_id IN "+inList(anons))
		}
		cond = append(cond, "previous_id IN "+inList(entities))
		out = append(out, tableWhere{&eventsTable, strings.Join(cond, " OR ")})
		for _, t := range []*table{&segmentsTable, &predictionsTable, &traitScoresTable} {
			out = append(out, tableWhere{t, "entity_id IN " + inList(entities)})
		}
	}
	cond := "identifier IN " + inList(all)
	if len(entities) > 0 {
		cond += " OR canonical_id IN " + inList(entities)
	}
	return append(out, tableWhere{&identityLinksTable, cond})
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
// memory; a starting writer recalls the last forgetRecall's deletions
// (recallDeletions).
type forgetMemory struct {
	at     map[string]time.Time
	oldest time.Time // of at's times: nothing to forget before it is due
}

// forgetMemoryFor is how long the writer remembers a deletion, and how
// far back a starting writer looks for deletions (recallDeletions);
// forgetRecallMax is the most identity records it reads for that (every
// link of the window is read to find the tombstones among them): past it,
// the latest of the window.
const forgetMemoryFor = 24 * time.Hour

var forgetRecallMax int64 = 2_000_000 // a variable for the tests

// add remembers id deleted at at, and forgets deletions over
// forgetMemoryFor older.
func (m *forgetMemory) add(id string, at time.Time) {
	if m.at == nil {
		m.at = map[string]time.Time{}
	}
	if len(m.at) > 0 && at.Sub(m.oldest) > forgetMemoryFor {
		m.oldest = at
		for k, t := range m.at {
			if at.Sub(t) > forgetMemoryFor {
				delete(m.at, k)
			} else if t.Before(m.oldest) {
				m.oldest = t
			}
		}
	}
	if at.After(m.at[id]) {
		m.at[id] = at
	}
	if len(m.at) == 1 || at.Before(m.oldest) {
		m.oldest = at
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

// recallDeletions fills w.forgot, at start, with the tombstones the
// identity topic holds from the last forgetMemoryFor (a compacted topic
// keeps tombstones delete.retention.ms, a day by default): a writer
// restarted with a backlog still leaves out the rows of people deleted
// before it, as the writer before it did. Past forgetRecallMax records in
// the window it reads the latest of them, each partition its share, and
// says so. Best effort: a topic it cannot read leaves the memory empty, as
// it was.
func (w *Writer) recallDeletions(ctx context.Context) error {
	topic := w.cfg.Kafka.Topics.Identity
	if topic == "" {
		return nil
	}
	adm := kadm.NewClient(w.cl)
	since := time.Now().Add(-forgetMemoryFor).UnixMilli()
	starts, err := adm.ListOffsetsAfterMilli(ctx, since, topic)
	if err != nil {
		return err
	}
	// Up to the last stable offsets: a transaction open at the end (the
	// linker's next) would hold a read_committed reader until it ends.
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return err
	}
	first, left := map[int32]int64{}, map[int32]int64{}
	var records int64
	starts.Each(func(o kadm.ListedOffset) {
		end, ok := ends.Lookup(topic, o.Partition)
		if o.Err == nil && ok && end.Err == nil && o.Offset < end.Offset {
			first[o.Partition], left[o.Partition] = o.Offset, end.Offset
			records += end.Offset - o.Offset
		}
	})
	if len(first) == 0 {
		return nil
	}
	if records > forgetRecallMax {
		for part, start := range first {
			share := (left[part] - start) * forgetRecallMax / records
			first[part] = left[part] - share
			if share == 0 {
				delete(first, part)
				delete(left, part)
			}
		}
		w.log.Warn("recalling only the latest deletions: rows of people deleted before them, read in a backlog now, are kept",
			"topic", topic, "records", records, "read", forgetRecallMax, "window", forgetMemoryFor)
		if len(first) == 0 {
			return nil
		}
	}
	from := map[int32]kgo.Offset{}
	for part, o := range first {
		from[part] = kgo.NewOffset().At(o)
	}
	cl, err := kafka.NewClient(w.cfg.Kafka,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// The transactions' markers too: a window whose last offsets are
		// markers (its records older, their commit newer) would
		// otherwise deliver nothing to end the read with.
		kgo.KeepControlRecords(),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n := 0
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("reading %s's deletions: %w (%d partitions unread)", topic, ctx.Err(), len(left))
		}
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			for _, r := range p.Records {
				if r.Attrs.IsControl() || r.Value != nil || !identity.IsLink(r.Key) {
					continue
				}
				if id, err := identity.ParseIdentifier(string(r.Key)); err == nil && id.Entity() {
					w.forgot.add(id.Value, r.Timestamp)
					n++
				}
			}
			end, ok := left[p.Partition]
			if k := len(p.Records); ok && (p.LastStableOffset >= end || (k > 0 && p.Records[k-1].Offset+1 >= end)) {
				delete(left, p.Partition)
			}
		})
	}
	if n > 0 {
		w.log.Info("recalled recent deletions: their older rows read later are not kept", "entities", n)
	}
	return nil
}

// appendPart adds to parts the deletion part a tombstone carries in its
// deletion.Header (none on tombstones from before the header, or written
// by hand).
func appendPart(parts []deletion.Part, rec *kgo.Record, log *slog.Logger) []deletion.Part {
	for _, h := range rec.Headers {
		if h.Key != deletion.Header {
			continue
		}
		p, err := deletion.ParsePart(string(h.Value))
		if err != nil {
			log.Warn("a tombstone with an unreadable deletion header: its deletion's progress will miss it", "key", string(rec.Key), "err", err)
			continue
		}
		parts = append(parts, p)
	}
	return parts
}

// recordDeleted writes the progress of the deletions whose rows Forget
// just deleted (deletion.History, one record per identifier) to the
// deletions topic, retrying until Kafka takes them or ctx ends.
func (w *Writer) recordDeleted(ctx context.Context) error {
	topic := w.cfg.Kafka.Topics.Deletions
	if topic == "" || len(w.forgetParts) == 0 {
		w.forgetParts = nil
		return nil
	}
	now := time.Now()
	recs := make([]*kgo.Record, len(w.forgetParts))
	for i, p := range w.forgetParts {
		done := deletion.Record{Request: p.Request, Stage: deletion.History, At: now, Index: p.Index}
		recs[i] = &kgo.Record{Topic: topic, Key: done.Key(), Value: done.Encode()}
	}
	backoff := 100 * time.Millisecond
	for {
		err := w.cl.ProduceSync(ctx, recs...).FirstErr()
		if err == nil {
			w.forgetParts = nil
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.log.Warn("cannot record the deletions' progress; retrying", "topic", topic, "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, w.opts.MaxBackoff)
	}
}

// OldestRunningMutation is the creation time (to the second) of the oldest
// ClickHouse mutation of the history's database that is not done, zero
// when none runs: a deletion whose rows' ALTER TABLE ... DELETE was issued
// before it may still have rows to delete (deletion.Status.SettleMutations).
func (r *Reader) OldestRunningMutation(ctx context.Context) (time.Time, error) {
	rows, err := r.conn.Query(ctx, `SELECT toUInt32(min(create_time)), count() FROM system.mutations WHERE database = ? AND is_done = 0`, r.db)
	if err != nil {
		return time.Time{}, fmt.Errorf("cannot read the running mutations: %w", err)
	}
	defer rows.Close()
	var oldest uint32
	var n uint64
	if rows.Next() {
		if err := rows.Scan(&oldest, &n); err != nil {
			return time.Time{}, fmt.Errorf("cannot read the running mutations: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return time.Time{}, fmt.Errorf("cannot read the running mutations: %w", err)
	}
	if n == 0 {
		return time.Time{}, nil
	}
	return time.Unix(int64(oldest), 0).UTC(), nil
}
