package scorer

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/identitydb"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Identities is the scorer's copy of the identity table (pulse.identity,
// identity.Link records keyed by identifier): each person's identifiers
// with when and by which event they were linked, for GET /v1/profiles and
// the subjects of deletions and exports. (Which person an id's lookups
// answer is the store's: a merged entity's vector names its canonical id,
// followCanonical.)
//
// The copy is an identitydb in <data_dir>/scorer/<identity topic>, not the
// heap: a scorer started again on its data dir reads only the topic's
// records after the copy's positions (read_committed, no consumer group:
// each scorer holds the whole table), the whole topic when it has none,
// when the copy is older than half the topic's delete.retention.ms (a
// person deleted meanwhile may have lost its tombstones), or when the
// topic is another. Where the data dir cannot hold it (read-only, or
// another scorer's), the copy is kept in memory, as before, and the log
// says so. A link is visible here as soon as the linker committed it, a
// moment before the stream has moved the old id's state into the
// person's.
//
// Identities is safe for concurrent use: Run writes, lookups read.
type Identities struct {
	cfg *config.Config
	log *slog.Logger
	dir string

	mu sync.RWMutex // held for reading by lookups, for writing to close
	db *identitydb.DB
	// read counts the links read since Run started (tests).
	read  atomic.Int64
	ready atomic.Bool
}

var identityLinksRead = promauto.NewCounter(prometheus.CounterOpts{
	Name: "pulse_scorer_identity_links_read_total",
	Help: "Identity links read from the identity topic into the scorer's copy (the tail after its positions at a start, then as they come).",
})

// NewIdentities reads cfg.Kafka.Topics.Identity once Run starts, into a
// copy under cfg.DataDir.
func NewIdentities(cfg *config.Config, log *slog.Logger) *Identities {
	if log == nil {
		log = slog.Default()
	}
	return &Identities{cfg: cfg, log: log.With("component", "identities"),
		dir: filepath.Join(cfg.DataDir, "scorer", cfg.Kafka.Topics.Identity)}
}

// Run brings the copy up to date and follows the identity topic until ctx
// ends, when it returns nil. A failure (Kafka away, the topic not made
// yet, the disk) is logged and the copy opened and caught up again, after
// 1 s, then up to 10 s between tries.
func (ids *Identities) Run(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := ids.run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := min(time.Duration(attempt)*time.Second, 10*time.Second)
		ids.log.Warn("identity copy stopped; starting it again", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (ids *Identities) run(ctx context.Context) error {
	db, has, err := identitydb.Open(ids.dir, identitydb.Options{Log: ids.log})
	if err != nil {
		ids.log.Warn("cannot keep the identity table's copy on disk; keeping it in memory", "dir", ids.dir, "err", err)
		if db, has, err = identitydb.Open("identity", identitydb.Options{FS: vfs.NewMem(), Log: ids.log}); err != nil {
			return err
		}
	}
	ids.mu.Lock()
	ids.db = db
	ids.mu.Unlock()
	defer func() {
		ids.mu.Lock()
		ids.db = nil
		ids.mu.Unlock()
		db.Close()
	}()
	cl, err := kafka.NewClient(ids.cfg.Kafka)
	if err != nil {
		return err
	}
	defer cl.Close()
	from, ends, m, err := ids.catchUpFrom(ctx, cl, db, has)
	if err != nil {
		return err
	}
	cons, err := kafka.NewClient(ids.cfg.Kafka,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{ids.cfg.Kafka.Topics.Identity: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.FetchMaxBytes(64<<20),
	)
	if err != nil {
		return err
	}
	defer cons.Close()
	if m.Pos == nil {
		// From nothing: the links are written as read and indexed by
		// person once the topic is read (cheaper than a read per record).
		if err := ids.build(ctx, cons, db, m, ends); err != nil {
			return err
		}
	}
	return ids.follow(ctx, cons, db, ends)
}

// behind lists the partitions whose ends (at the start) are past the
// positions in pos, but for a last transaction marker, which is no record.
func behind(ends, pos map[int32]int64) map[int32]bool {
	out := map[int32]bool{}
	for part, end := range ends {
		if at, ok := pos[part]; end > 0 && (!ok || at < end-2) {
			out[part] = true
		}
	}
	return out
}

// build reads the topic from its start into an empty copy, until the
// ends it had at the start (less the transactions' markers, which are no
// records) or a second with nothing to read (what is left is aborted
// transactions', or a fetch failed): Put, then Index, and the meta. What
// it did not reach, follow reads on from its positions.
func (ids *Identities) build(ctx context.Context, cons *kgo.Client, db *identitydb.DB, m identitydb.Meta, ends map[int32]int64) error {
	began := time.Now()
	m.Pos = map[int32]int64{}
	left := behind(ends, m.Pos)
	db.BeginRebuild()
	read := 0
	for len(left) > 0 {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cons.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			db.Abort()
			return ctx.Err()
		}
		ids.fetchErrors(fs)
		if fs.NumRecords() == 0 {
			break
		}
		for it := fs.RecordIter(); !it.Done(); {
			r := it.Next()
			m.Pos[r.Partition] = r.Offset
			if r.Offset >= ends[r.Partition]-2 {
				delete(left, r.Partition)
			}
			if identity.IsLink(r.Key) {
				db.Put(string(r.Key), r.Value)
				read++
			}
		}
		if err := db.CommitPart(); err != nil {
			db.Abort()
			return err
		}
	}
	if err := db.Index(); err != nil {
		db.Abort()
		return err
	}
	m.AsOf = time.Now().UnixMilli()
	if err := db.Commit(m); err != nil {
		return err
	}
	identityLinksRead.Add(float64(read))
	ids.read.Add(int64(read))
	ids.ready.Store(true)
	ids.log.Info("identity copy built from the whole topic", "links", read, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

func (ids *Identities) fetchErrors(fs kgo.Fetches) {
	fs.EachError(func(t string, p int32, err error) {
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			ids.log.Warn("fetch failed", "topic", t, "partition", p, "err", err)
		}
	})
}

// follow applies the topic's records to the copy as they come, a batch
// per fetch with the positions it reaches, until ctx ends; it is ready
// once past the ends the topic had at the start.
func (ids *Identities) follow(ctx context.Context, cons *kgo.Client, db *identitydb.DB, ends map[int32]int64) error {
	m := db.Meta()
	left := behind(ends, m.Pos)
	if len(left) == 0 {
		ids.ready.Store(true)
	}
	for {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		ids.fetchErrors(fs)
		if fs.NumRecords() == 0 {
			continue
		}
		db.Begin()
		m.Pos = maps.Clone(m.Pos)
		if m.Pos == nil {
			m.Pos = map[int32]int64{}
		}
		var failed error
		fs.EachRecord(func(r *kgo.Record) {
			if failed != nil {
				return
			}
			m.Pos[r.Partition] = r.Offset
			if r.Offset >= ends[r.Partition]-2 {
				delete(left, r.Partition)
			}
			if !identity.IsLink(r.Key) {
				return // the linker's own records
			}
			if err := db.Apply(string(r.Key), r.Value); err != nil {
				ids.log.Warn("skipping an unreadable identity link", "partition", r.Partition, "offset", r.Offset, "err", err)
				return
			}
			identityLinksRead.Inc()
			ids.read.Add(1)
			failed = db.CommitPart()
		})
		if failed == nil {
			m.AsOf = time.Now().UnixMilli()
			failed = db.Commit(m)
		}
		if failed != nil {
			db.Abort()
			return failed
		}
		if len(left) == 0 {
			ids.ready.Store(true)
		}
	}
}

// catchUpFrom checks the copy against the topic (its id, partitions,
// ends, delete.retention.ms), clears it when it cannot be caught up, and
// returns where to read each partition from, the topic's ends and the
// copy's meta to go on with (Pos nil: the copy is empty, to be built).
func (ids *Identities) catchUpFrom(ctx context.Context, cl *kgo.Client, db *identitydb.DB, has bool) (map[int32]kgo.Offset, map[int32]int64, identitydb.Meta, error) {
	topic := ids.cfg.Kafka.Topics.Identity
	adm := kadm.NewClient(cl)
	td, err := adm.ListTopics(ctx, topic)
	if err == nil {
		err = td[topic].Err
	}
	if err != nil {
		return nil, nil, identitydb.Meta{}, err
	}
	listed, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, nil, identitydb.Meta{}, err
	}
	ends := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	id := td[topic].ID.String()
	if has {
		keep := kafka.DeleteRetentionOrDefault(ctx, cl, topic, ids.log)
		if reason, _ := identitydb.Stale(db.Meta(), id, ends, keep, time.Now()); reason != "" {
			ids.log.Info("reading the whole identity topic into the scorer's copy", "reason", reason)
			has = false
		}
	}
	m := identitydb.Meta{Parts: len(ends), Topic: id}
	if has {
		m.Pos = maps.Clone(db.Meta().Pos)
		if m.Pos == nil {
			m.Pos = map[int32]int64{}
		}
	} else if err := db.Clear(); err != nil {
		return nil, nil, identitydb.Meta{}, err
	}
	from := map[int32]kgo.Offset{}
	for part := range ends {
		from[part] = kgo.NewOffset().AtStart()
		if pos, ok := m.Pos[part]; ok {
			from[part] = kgo.NewOffset().At(pos + 1)
		}
	}
	return from, ends, m, nil
}

// CanonicalOf is the canonical id of the person the typed identifier is
// linked to; ok is false when it is linked to none.
func (ids *Identities) CanonicalOf(identifier string) (string, bool) {
	if ids == nil {
		return "", false
	}
	ids.mu.RLock()
	defer ids.mu.RUnlock()
	if ids.db == nil {
		return "", false
	}
	c, ok, err := ids.db.Canonical(identifier)
	if err != nil {
		ids.log.Warn("cannot read the identity table's copy", "err", err)
	}
	return c, ok
}

// Links lists the identifiers of the person with canonical id c, each with
// its latest link, oldest first; none when c has no links.
func (ids *Identities) Links(c string) []identity.Link {
	if ids == nil {
		return nil
	}
	ids.mu.RLock()
	defer ids.mu.RUnlock()
	if ids.db == nil {
		return nil
	}
	ls, err := ids.db.Links(c)
	if err != nil {
		ids.log.Warn("cannot read the identity table's copy", "err", err)
	}
	return ls
}
