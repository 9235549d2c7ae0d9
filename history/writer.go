package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/deletion"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// WriterOptions tune the Writer. Zero values take the defaults.
type WriterOptions struct {
	// Group is the Kafka consumer group, overriding the default
	// kafka.HistoryGroup (pulse-history).
	Group string
	// BatchRows flushes once this many records are buffered. Default 50000.
	BatchRows int
	// FlushInterval flushes a non-empty batch this long after its first
	// record, however small. Default 1s.
	FlushInterval time.Duration
	// MaxBackoff caps the wait between retries of a failed insert. Default 10s.
	MaxBackoff time.Duration
	// ShutdownTimeout bounds the last flush when ctx ends. Default 10s.
	ShutdownTimeout time.Duration
}

func (o *WriterOptions) ensureDefaults() {
	if o.Group == "" {
		o.Group = kafka.HistoryGroup
	}
	if o.BatchRows <= 0 {
		o.BatchRows = 50_000
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
}

// Writer copies pulse.events, pulse.events.invalid, pulse.segments,
// pulse.predictions and pulse.traits into ClickHouse. Its whole life is Run.
type Writer struct {
	cfg  *config.Config
	opts WriterOptions
	conn driver.Conn
	cl   *kgo.Client
	log  *slog.Logger

	events      eventRows
	invalid     invalidRows
	segments    segmentRows
	predictions predictionRows
	links       linkRows
	traits      traitScoreRows
	forget      []identity.Identifier // tombstones on pulse.identity: rows to delete (Forget)
	forgetParts []deletion.Part       // their deletions' parts (deletion.Header): progress to record once deleted
	forgot      forgetMemory          // the entities deleted, and when: their older rows read later are not kept
	first       time.Time             // when the oldest buffered record was added
	commitOwed  bool                  // the last commit failed: try again (commit)
}

// NewWriter connects to ClickHouse (cfg.ClickHouse) and joins the consumer
// group on cfg.Kafka. It neither creates the schema nor fetches until Run.
func NewWriter(cfg *config.Config, opts WriterOptions, log *slog.Logger) (*Writer, error) {
	opts.ensureDefaults()
	if log == nil {
		log = slog.Default()
	}
	conn, err := Open(cfg.ClickHouse)
	if err != nil {
		return nil, err
	}
	t := cfg.Kafka.Topics
	cl, err := kafka.NewClient(cfg.Kafka, append(kafka.GroupOpts(opts.Group),
		kgo.ConsumeTopics(historyTopics(t)...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		// Partitions stay put while a batch is buffered, so another member
		// does not insert the same records meanwhile.
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxBytes(64<<20),
		kgo.FetchMaxPartitionBytes(16<<20),
	)...)
	if err != nil {
		conn.Close()
		return nil, err
	}
	w := &Writer{cfg: cfg, opts: opts, conn: conn, cl: cl, log: log.With("service", "history")}
	w.events.forgot, w.segments.forgot, w.predictions.forgot, w.traits.forgot = &w.forgot, &w.forgot, &w.forgot, &w.forgot
	return w, nil
}

// Run migrates the schema, then consumes and writes until ctx ends. It
// flushes and commits what it holds before returning nil on cancellation.
// ClickHouse being down is not an error: Run waits and retries, and the
// records wait in Kafka.
func (w *Writer) Run(ctx context.Context) error {
	defer func() {
		// Close leaves the group, which waits for a blocked rebalance.
		w.cl.AllowRebalance()
		w.cl.Close()
		w.conn.Close()
	}()
	if err := w.retry(ctx, "create schema", func(ctx context.Context) error {
		return Migrate(ctx, w.conn, w.cfg.ClickHouse.Database)
	}); err != nil {
		return nil // ctx ended
	}
	if w.cfg.Kafka.CreateTopics == nil || *w.cfg.Kafka.CreateTopics {
		if err := kafka.EnsureTopics(ctx, w.cl, w.cfg.Kafka); err != nil && ctx.Err() == nil {
			w.log.Warn("cannot create topics; consuming those that exist", "err", err)
		}
	}
	if err := w.recallDeletions(ctx); err != nil && ctx.Err() == nil {
		w.log.Warn("cannot read the recent deletions from the identity topic; rows of people deleted before this start that are still to copy may be kept (delete them again)", "err", err)
	}
	w.log.Info("history writer started", "group", w.opts.Group, "database", w.cfg.ClickHouse.Database)
	for {
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if w.pending() > 0 {
			pollCtx, cancel = context.WithDeadline(ctx, w.first.Add(w.opts.FlushInterval))
		} else if w.commitOwed {
			pollCtx, cancel = context.WithTimeout(ctx, commitRetry)
		}
		fetches := w.cl.PollRecords(pollCtx, w.opts.BatchRows-w.pending())
		cancel()
		if fetches.IsClientClosed() {
			return errors.New("kafka client closed")
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				w.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
			}
		})
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if n := len(p.Records); n > 0 {
				lag := p.HighWatermark - p.Records[n-1].Offset - 1
				consumerLag.WithLabelValues(p.Topic, strconv.Itoa(int(p.Partition))).Set(float64(lag))
			}
		})
		fetches.EachRecord(w.add)
		if ctx.Err() != nil {
			sctx, cancel := context.WithTimeout(context.Background(), w.opts.ShutdownTimeout)
			err := w.flush(sctx)
			cancel()
			if err != nil {
				w.log.Warn("history writer stopped with an unwritten batch; Kafka replays it", "rows", w.pending(), "err", err)
			}
			return nil
		}
		if w.pending() >= w.opts.BatchRows || (w.pending() > 0 && time.Since(w.first) >= w.opts.FlushInterval) {
			if err := w.flush(ctx); err != nil {
				continue // ctx ended: the loop's shutdown path tries once more
			}
		}
		if w.pending() == 0 {
			if w.commitOwed && ctx.Err() == nil {
				w.commit(ctx)
			}
			w.cl.AllowRebalance()
		}
	}
}

func (w *Writer) pending() int {
	return w.events.len() + w.invalid.len() + w.segments.len() + w.predictions.len() + w.links.len() + w.traits.len() + len(w.forget)
}

// historyTopics are the topics the writer copies.
func historyTopics(t config.Topics) []string {
	out := []string{t.Events, t.Invalid, t.Segments, t.Predictions}
	if t.Identity != "" {
		out = append(out, t.Identity)
	}
	if t.Traits != "" {
		out = append(out, t.Traits)
	}
	return out
}

// add files one record into its table's batch.
func (w *Writer) add(rec *kgo.Record) {
	if w.pending() == 0 {
		w.first = time.Now()
	}
	t := w.cfg.Kafka.Topics
	var err error
	switch rec.Topic {
	case t.Events:
		err = w.events.addEvent(rec)
	case t.Invalid:
		err = w.invalid.addDeadLetter(rec)
	case t.Segments:
		err = w.segments.addChange(rec)
	case t.Predictions:
		err = w.predictions.addPrediction(rec)
	case t.Identity:
		if rec.Value == nil && identity.IsLink(rec.Key) {
			var id identity.Identifier
			if id, err = identity.ParseIdentifier(string(rec.Key)); err == nil {
				w.forget = append(w.forget, id)
				w.forgetParts = appendPart(w.forgetParts, rec, w.log)
				if id.Entity() {
					w.forgot.add(id.Value, rec.Timestamp)
				}
			}
			break
		}
		err = w.links.addLink(rec)
	case t.Traits:
		err = w.traits.addTraitScore(rec)
	default:
		err = fmt.Errorf("unexpected topic")
	}
	if err != nil {
		unreadable.WithLabelValues(rec.Topic).Inc()
		w.invalid.addUnreadable(rec, err)
	}
}

// flush inserts every buffered batch, retrying until ClickHouse takes them
// or ctx ends, then commits the offsets of everything polled. A table whose
// insert succeeded is not inserted again when another table's is retried.
func (w *Writer) flush(ctx context.Context) error {
	batches := []struct {
		t    *table
		rows batch
	}{
		{&eventsTable, &w.events},
		{&invalidTable, &w.invalid},
		{&segmentsTable, &w.segments},
		{&predictionsTable, &w.predictions},
		{&identityLinksTable, &w.links},
		{&traitScoresTable, &w.traits},
	}
	for _, b := range batches {
		if b.rows.len() == 0 {
			continue
		}
		err := w.retry(ctx, "insert into "+b.t.name, func(ctx context.Context) error {
			start := time.Now()
			if err := insertColumns(ctx, w.conn, b.t.insertSQL(w.cfg.ClickHouse.Database), b.rows.columns()); err != nil {
				return err
			}
			insertSeconds.WithLabelValues(b.t.name).Observe(time.Since(start).Seconds())
			rowsWritten.WithLabelValues(b.t.name).Add(float64(b.rows.len()))
			return nil
		})
		if err != nil {
			return err
		}
		b.rows.reset()
	}
	// After the inserts: a person's links inserted in this batch are
	// deleted with the rest of its rows.
	if len(w.forget) > 0 {
		err := w.retry(ctx, "delete forgotten rows", func(ctx context.Context) error {
			return Forget(ctx, w.conn, w.cfg.ClickHouse.Database, w.forget)
		})
		if err != nil {
			return err
		}
		forgotten.Add(float64(len(w.forget)))
		w.log.Info("deleted the rows of forgotten identifiers", "identifiers", len(w.forget))
		w.forget = nil
		// Before the offsets: a crash here replays the tombstones, and
		// their progress is written again under the same keys.
		if err := w.recordDeleted(ctx); err != nil {
			return err
		}
	}
	// Every polled record is in the batches just written, so "uncommitted"
	// is exactly what ClickHouse now holds.
	w.commit(ctx)
	return nil
}

// commit commits the offsets of everything polled. One the group refuses
// (a rebalance, the coordinator moving) stays uncommitted in the client,
// and commitOwed makes Run try again after commitRetry even when no more
// records come: an idle partition's lag would otherwise stay up in every
// tool, and a restart would replay its last batch.
func (w *Writer) commit(ctx context.Context) {
	if err := w.cl.CommitUncommittedOffsets(ctx); err != nil {
		commitErrors.Inc()
		if !w.commitOwed { // once, not every retry
			w.log.Warn("cannot commit offsets; trying again (until then a restart replays the records, which collapse on their ids)", "err", err)
		}
		w.commitOwed = true
		return
	}
	if w.commitOwed {
		w.log.Info("offsets committed again")
	}
	w.commitOwed = false
}

// commitRetry is how long Run waits, with nothing buffered, before it
// commits again the offsets the group refused.
const commitRetry = time.Second

// retry runs f until it succeeds or ctx ends, backing off exponentially.
func (w *Writer) retry(ctx context.Context, what string, f func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			if attempt > 1 {
				w.log.Info("clickhouse is back", "op", what, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		insertRetries.Inc()
		w.log.Warn("clickhouse refused; retrying", "op", what, "attempt", attempt, "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, w.opts.MaxBackoff)
	}
}

// insertColumns sends one INSERT of whole columns, the fast path of
// clickhouse-go (no per-row reflection).
func insertColumns(ctx context.Context, conn driver.Conn, sql string, cols []any) error {
	b, err := conn.PrepareBatch(ctx, sql)
	if err != nil {
		return fmt.Errorf("cannot prepare insert: %w", err)
	}
	for i, c := range cols {
		if err := b.Column(i).Append(c); err != nil {
			b.Abort()
			return fmt.Errorf("cannot append column %d: %w", i, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("cannot send insert: %w", err)
	}
	return nil
}
