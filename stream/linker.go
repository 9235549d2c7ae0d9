package stream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/pulse-rt/pulse/deletion"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/identitydb"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The linker folds the stream's link requests (pulse.identity.requests,
// one partition, so one order) with identity.Graph and, per request, in
// one transaction with the next requests offset, writes:
//
//   - the links (identity.Link) to pulse.identity, keyed by identifier;
//   - a move per merged entity to pulse.events.resolved, keyed by the
//     entity that stops existing, for the task of its partition;
//   - a dead letter (event.ReasonLinkRefused) per refused link;
//   - for a deletion (identity.KindForget, from the profile API), a
//     tombstone per identifier of the person and a forget per entity of
//     it to pulse.events.resolved, for the tasks to delete their state,
//     and its progress to pulse.deletions (deletion.Identity; each
//     tombstone carries its part in a deletion.Header for the history).
//
// Its state is the graph, a copy of pulse.identity's table in Pebble
// (identitydb, in <data_dir>/stream/<identity topic>-linker), brought up
// to date on open from the topic, read
// read_committed up to a fence record the linker writes to each partition
// first: the fence's transaction fences an older linker, so everything
// before it is final. The state holds the topic up to positions of its
// own, so an open reads only the records after them (all of them the
// first time, or when the state is older than half the topic's
// delete.retention.ms: the tombstones of people deleted meanwhile may be
// gone). Keys starting with "__" on pulse.identity are the linker's own
// (its fences, and "__linker/offset", the next requests offset): readers
// of links skip them. A fold writes its links to the state in a batch
// committed after its Kafka transaction; a fold that fails drops the
// batch, and the linker reopens.
//
// The linker runs beside the task of events partition 0, on whichever
// processor owns it: one linker at a time, moved with the partition.

var (
	mLinks = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_identity_links_total",
		Help: "Identifiers whose canonical id changed (one identity.Link each).",
	})
	mMerges = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_identity_merges_total",
		Help: "Link requests that joined two profiles (or an identifier to one).",
	})
	mRefusals = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "pulse_identity_refusals_total",
		Help: "Link requests refused by a guard, by reason: blocked, cap_anonymous, cap_identifiers, known_users_conflict, unreadable.",
	}, []string{"reason"})
	mForgotten = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_identity_forgotten_total",
		Help: "Deletion requests the linker carried out (a person, or an identifier in none, forgotten).",
	})
	mLinkerRestored = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_identity_restored_links_total",
		Help: "Links and tombstones of the identity topic the linker read back at its starts (the tail after its local state's positions, or the whole topic).",
	})
	mForwarded = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_identity_forwarded_total",
		Help: "Records the stream forwarded to the task of a merged entity's canonical id (events and state transfers).",
	})
)

// refusalUnreadable is the refusals metric's reason for a request the
// linker cannot decode (the guards' reasons are identity's).
const refusalUnreadable = "unreadable"

func init() {
	// Every reason is a series at 0 from the start, so a rate or an alert
	// sees it before the first refusal.
	for _, r := range []string{identity.ReasonBlocked, identity.ReasonCapAnonymous, identity.ReasonCapIdentifiers,
		identity.ReasonKnownUsers, refusalUnreadable} {
		mRefusals.WithLabelValues(r)
	}
}

// linkerOffsetKey keys the linker's next requests offset on pulse.identity.
const linkerOffsetKey = identity.ReservedKeyPrefix + "linker/offset"

// linker is the single identity fold; see above.
type linker struct {
	p     *Processor
	log   *slog.Logger
	opts  identity.Options
	prod  *kgo.Client
	cons  *kgo.Client
	state *identitydb.DB
	graph *identity.Graph
	next  int64
	// topicID is the identity topic's id, as the last fence found it.
	topicID string

	stop chan struct{}
	done chan struct{}
}

// startLinker runs a linker until stopLinker.
func (p *Processor) startLinker() *linker {
	l := &linker{p: p, log: p.log.With("component", "linker"), opts: identity.FromConfig(p.cfg.Identity),
		stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l
}

func (l *linker) close() {
	close(l.stop)
	<-l.done
}

// run opens the linker and folds requests until stopped, reopening it from
// pulse.identity after a failure.
func (l *linker) run() {
	defer close(l.done)
	defer l.closeState()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for attempt := 0; ; attempt++ {
		err := l.open(ctx)
		if err == nil {
			attempt = 0
			err = l.loop(ctx)
		}
		l.closeClients()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errKill) {
			l.p.fatal.CompareAndSwap(nil, &err)
			l.p.cancelRun()
			return
		}
		l.log.Error("identity linker failed; reopening it from the identity topic", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(time.Duration(attempt+1)*time.Second, 10*time.Second)):
		}
	}
}

func (l *linker) closeClients() {
	if l.cons != nil {
		l.cons.Close()
		l.cons = nil
	}
	if l.prod != nil {
		l.prod.Close()
		l.prod = nil
	}
}

// open fences an older linker, rebuilds the graph from pulse.identity and
// starts reading the requests after the last folded one.
func (l *linker) open(ctx context.Context) error {
	tp := l.p.cfg.Kafka.Topics
	var err error
	l.prod, err = kafka.NewClient(l.p.cfg.Kafka, append(append(kafka.ProducerOpts(),
		kgo.TransactionalID("pulse-linker-"+tp.IdentityRequests),
		kgo.TransactionTimeout(60*time.Second),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.BasicConsistentPartitioner(func(topic string) func(*kgo.Record, int) int {
			tp := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
			return func(r *kgo.Record, n int) int {
				if !identity.IsLink(r.Key) {
					return int(r.Partition) // the linker's own records: placed
				}
				return tp.Partition(r, n)
			}
		})),
	), l.p.opts.KafkaOpts...)...)
	if err != nil {
		return err
	}
	fences, err := l.fence(ctx)
	if err != nil {
		return err
	}
	// A state open from the attempt before is as its last commit left it
	// (a restore that failed part way left it empty).
	has := l.state != nil && l.state.Meta().Parts > 0
	if l.state == nil {
		l.state, has, err = identitydb.Open(l.p.linkerDir(), identitydb.Options{FS: l.p.opts.fs, Log: l.log, MemTableSize: l.p.opts.MemTableSize})
		if err != nil {
			return err
		}
	}
	read, err := l.restore(ctx, fences, has)
	if err != nil {
		return err
	}
	l.graph = identity.NewGraph(l.opts, l.state)
	l.cons, err = kafka.NewClient(l.p.cfg.Kafka, append([]kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{tp.IdentityRequests: {0: kgo.NewOffset().At(l.next)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}, l.p.opts.KafkaOpts...)...)
	if err != nil {
		return err
	}
	l.log.Info("identity linker ready", "links_read", read, "next_request", l.next)
	return nil
}

// fence commits a fence record to every partition of pulse.identity and
// returns their offsets.
func (l *linker) fence(ctx context.Context) (map[int32]int64, error) {
	topic := l.p.cfg.Kafka.Topics.Identity
	n, id, err := l.partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	l.topicID = id
	var nonce [12]byte
	rand.Read(nonce[:])
	if err := l.prod.BeginTransaction(); err != nil {
		return nil, fmt.Errorf("cannot begin transaction: %w", err)
	}
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Partition: int32(i), Key: []byte(identity.ReservedKeyPrefix + "linker/fence"), Value: []byte(hex.EncodeToString(nonce[:]))}
	}
	if err := l.prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		l.prod.EndTransaction(ctx, kgo.TryAbort)
		return nil, fmt.Errorf("cannot write the identity fence: %w", err)
	}
	if err := l.prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return nil, fmt.Errorf("cannot commit the identity fence: %w", err)
	}
	out := map[int32]int64{}
	for _, r := range recs {
		out[r.Partition] = r.Offset
	}
	return out, nil
}

// partitions returns the topic's partition count and its id.
func (l *linker) partitions(ctx context.Context, topic string) (int, string, error) {
	td, err := kadm.NewClient(l.prod).ListTopics(ctx, topic)
	if err != nil {
		return 0, "", fmt.Errorf("cannot describe topic %s: %w", topic, err)
	}
	d := td[topic]
	if d.Err != nil || len(d.Partitions) == 0 {
		return 0, "", fmt.Errorf("cannot describe topic %s: %v", topic, d.Err)
	}
	return len(d.Partitions), d.ID.String(), nil
}

// restore brings the state up to the fences: it reads pulse.identity's
// records after the state's positions, or all of them when the state
// holds none, is stale (dropIfStale's rule, on this topic) or does not
// fit the topic; the next requests offset into l.next. It returns how
// many links (and tombstones) it read.
func (l *linker) restore(ctx context.Context, fences map[int32]int64, has bool) (int, error) {
	s, topic := l.state, l.p.cfg.Kafka.Topics.Identity
	now := l.p.opts.Now()
	if has {
		keep := kafka.DeleteRetentionOrDefault(ctx, l.prod, topic, l.log)
		if reason, old := identitydb.Stale(s.Meta(), l.topicID, fences, keep, now); reason != "" {
			l.log.Warn("identity linker: reading the whole identity topic again", "reason", reason)
			if old {
				mStaleStates.Inc()
			}
			has = false
		}
	}
	if !has {
		if err := s.Clear(); err != nil {
			return 0, err
		}
	}
	was := s.Meta()
	m := identitydb.Meta{Next: was.Next, Pos: map[int32]int64{}, Parts: len(fences), Topic: l.topicID}
	from := map[int32]kgo.Offset{}
	for part, f := range fences {
		at := int64(0)
		if pos, ok := was.Pos[part]; ok {
			at = pos + 1
		}
		if at < f {
			from[part] = kgo.NewOffset().At(at)
		}
		m.Pos[part] = f // the fence itself: the linker's own record
	}
	// From nothing, the links are written as read and indexed by person
	// after (cheaper than an indexed batch and a read per record); on a
	// tail, each goes through apply.
	rebuild := !has
	if rebuild {
		s.BeginRebuild()
	} else {
		s.Begin()
	}
	read := 0
	if len(from) > 0 {
		cl, err := kafka.NewClient(l.p.cfg.Kafka, append([]kgo.Opt{
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.FetchMaxBytes(64 << 20),
		}, l.p.opts.KafkaOpts...)...)
		if err != nil {
			s.Abort()
			return 0, err
		}
		defer cl.Close()
		for open := len(from); open > 0; {
			fs := cl.PollFetches(ctx)
			if err := ctx.Err(); err != nil {
				s.Abort()
				return 0, err
			}
			if err := fs.Err0(); err != nil {
				s.Abort()
				return 0, fmt.Errorf("cannot read %s: %w", topic, err)
			}
			for it := fs.RecordIter(); !it.Done(); {
				r := it.Next()
				f, ok := fences[r.Partition]
				if !ok || r.Offset > f {
					continue
				}
				if r.Offset == f {
					open--
					continue
				}
				switch k := string(r.Key); {
				case k == linkerOffsetKey:
					if n, err := strconv.ParseInt(string(r.Value), 10, 64); err == nil {
						m.Next = n
					}
				case !identity.IsLink(r.Key):
				case rebuild:
					read++
					s.Put(k, r.Value)
				default:
					read++
					if err := s.Apply(k, r.Value); err != nil {
						s.Abort()
						return 0, fmt.Errorf("%s/%d offset %d: %w", topic, r.Partition, r.Offset, err)
					}
				}
			}
			if err := s.CommitPart(); err != nil {
				s.Abort()
				return 0, err
			}
		}
	}
	if rebuild {
		if err := s.Index(); err != nil {
			s.Abort()
			return 0, err
		}
	}
	mLinkerRestored.Add(float64(read))
	l.p.linkerRead.Add(int64(read))
	m.AsOf = now.UnixMilli()
	if err := s.Commit(m); err != nil {
		return 0, err
	}
	if s.NeedsFilter() {
		s.StartFilter() // of what was just committed: every identifier
	}
	l.next = m.Next
	return read, nil
}

// loop folds the requests as they come.
func (l *linker) loop(ctx context.Context) error {
	for {
		fs := l.cons.PollRecords(ctx, 5000)
		if ctx.Err() != nil {
			return nil
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.Canceled) {
				ferr = err
			}
		})
		if ferr != nil {
			return fmt.Errorf("cannot fetch link requests: %w", ferr)
		}
		if recs := fs.Records(); len(recs) > 0 {
			if err := l.fold(ctx, recs); err != nil {
				return err
			}
		}
	}
}

// fold decides recs and commits the decisions with the next offset.
func (l *linker) fold(ctx context.Context, recs []*kgo.Record) error {
	tp := l.p.cfg.Kafka.Topics
	now := l.p.opts.Now()
	var out []*kgo.Record
	var links, merges, forgotten int
	refused := map[string]int{}
	next := l.next
	if err := l.state.InstallFilter(false); err != nil {
		return err
	}
	l.state.Begin()
	defer l.state.Abort() // a fold that fails leaves the state as it was
	for _, r := range recs {
		if r.Offset < next {
			continue
		}
		next = r.Offset + 1
		req, err := identity.DecodeRequest(r.Value)
		if err != nil {
			dl := event.NewDeadLetter("stream", event.ReasonUnreadable, r.Value, err, now)
			dl.Topic, dl.Partition, dl.Offset = r.Topic, r.Partition, r.Offset
			out = append(out, &kgo.Record{Topic: tp.Invalid, Key: r.Key, Value: dl.Encode()})
			refused[refusalUnreadable]++
			continue
		}
		d, err := l.graph.Apply(req)
		if err != nil {
			return err
		}
		mark := len(out)
		switch d.Outcome {
		case identity.Refused:
			out = append(out, l.refusal(r, d, now))
			refused[d.Reason]++
		case identity.Linked:
			merges++
			for _, lk := range d.Links {
				v, err := identity.EncodeLink(lk)
				if err != nil {
					return err
				}
				out = append(out, &kgo.Record{Topic: tp.Identity, Key: []byte(lk.Identifier), Value: v})
				links++
			}
			for _, m := range d.Moves {
				v := encodeResolved(resolved{Kind: resolvedMove, From: m.From, To: m.To, At: req.At, Cause: req.MessageID})
				out = append(out, &kgo.Record{Topic: tp.Resolved, Key: []byte(m.From), Value: v})
			}
		case identity.Forgotten:
			forgotten++
			for i, id := range d.Forgotten {
				tomb := &kgo.Record{Topic: tp.Identity, Key: []byte(id.String())} // a tombstone
				if req.MessageID != "" {
					// The history writer's share of the deletion's progress.
					part := deletion.Part{Request: req.MessageID, Index: i}
					tomb.Headers = []kgo.RecordHeader{{Key: deletion.Header, Value: []byte(part.String())}}
				}
				out = append(out, tomb)
			}
			for i, e := range d.Deletes {
				v := encodeResolved(resolved{Kind: resolvedForget, To: e, At: req.At, Cause: req.MessageID, Index: i})
				out = append(out, &kgo.Record{Topic: tp.Resolved, Key: []byte(e), Value: v})
				if req.Suppress && tp.Suppressions != "" {
					out = append(out, &kgo.Record{Topic: tp.Suppressions, Key: []byte(e), Value: identity.EncodeSuppression(req)})
				}
			}
			if tp.Deletions != "" && req.MessageID != "" {
				done := deletion.Record{Request: req.MessageID, Stage: deletion.Identity, At: now, RequestedAt: req.At, Kind: req.To.Kind,
					Suppress: req.Suppress, Identifiers: len(d.Forgotten), Entities: len(d.Deletes)}
				out = append(out, &kgo.Record{Topic: tp.Deletions, Key: done.Key(), Value: done.Encode()})
			}
			l.log.Info("identity: person forgotten", "subject", req.To.String(), "identifiers", len(d.Forgotten), "entities", len(d.Deletes), "request", req.MessageID)
		}
		// The decision's links and tombstones into the state, for the
		// requests after it: the same records the topic gets.
		for _, o := range out[mark:] {
			if o.Topic == tp.Identity {
				if err := l.state.Apply(string(o.Key), o.Value); err != nil {
					return err
				}
			}
		}
	}
	if next == l.next {
		return nil
	}
	out = append(out, &kgo.Record{Topic: tp.Identity, Partition: 0, Key: []byte(linkerOffsetKey), Value: []byte(strconv.FormatInt(next, 10))})
	if err := l.commit(ctx, out); err != nil {
		return err
	}
	m := l.state.Meta()
	m.Pos = maps.Clone(m.Pos)
	for _, o := range out {
		if o.Topic == tp.Identity {
			m.Pos[o.Partition] = max(m.Pos[o.Partition], o.Offset)
		}
	}
	m.Next, m.AsOf = next, now.UnixMilli()
	if err := l.state.Commit(m); err != nil {
		return err
	}
	if l.state.NeedsFilter() {
		l.state.StartFilter()
	}
	l.next = next
	mLinks.Add(float64(links))
	mMerges.Add(float64(merges))
	mForgotten.Add(float64(forgotten))
	for reason, n := range refused {
		mRefusals.WithLabelValues(reason).Add(float64(n))
	}
	return nil
}

// refusal is the dead letter of a refused link request.
func (l *linker) refusal(r *kgo.Record, d identity.Decision, now time.Time) *kgo.Record {
	q := d.Request
	err := fmt.Errorf("identity link refused (%s): %s and %s", d.Reason, q.From, q.To)
	dl := event.NewDeadLetter("stream", event.ReasonLinkRefused, r.Value, err, now)
	dl.Field, dl.MessageID = d.Reason, q.MessageID
	dl.Topic, dl.Partition, dl.Offset = r.Topic, r.Partition, r.Offset
	return &kgo.Record{Topic: l.p.cfg.Kafka.Topics.Invalid, Key: []byte(q.To.Value), Value: dl.Encode()}
}

// commit writes recs in one transaction.
func (l *linker) commit(ctx context.Context, recs []*kgo.Record) error {
	if err := l.prod.BeginTransaction(); err != nil {
		return fmt.Errorf("cannot begin transaction: %w", err)
	}
	var failed kafka.Failures
	for _, r := range recs {
		l.prod.Produce(ctx, r, failed.Promise)
	}
	if err := l.prod.Flush(ctx); err != nil {
		return fmt.Errorf("cannot flush transaction: %w", err)
	}
	if err := failed.Err(); err != nil {
		l.prod.EndTransaction(ctx, kgo.TryAbort)
		return fmt.Errorf("cannot produce transaction: %w", err)
	}
	if err := l.hook("linker-before-commit"); err != nil {
		return err
	}
	if err := l.prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("cannot commit transaction: %w", err)
	}
	return l.hook("linker-after-commit")
}

func (l *linker) hook(point string) error {
	if l.p.opts.hook == nil {
		return nil
	}
	return l.p.opts.hook(point, -1)
}

func (l *linker) closeState() {
	if l.state != nil {
		l.state.Close()
		l.state = nil
	}
}

func (p *Processor) linkerDir() string {
	return filepath.Join(p.cfg.DataDir, "stream", p.cfg.Kafka.Topics.Identity+"-linker")
}
