package scorer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Rebuilding the last hour from the segments topic at start keeps a deploy
// from flattening every dashboard's sparkline for an hour: the sampler alone
// knows only what this process has watched.
const (
	// defaultRebuildRecords bounds the records read at start. A segments
	// topic busier than this over an hour gets the most recent part of the
	// hour.
	defaultRebuildRecords = 2_000_000
	// defaultRebuildTime bounds the reading, so a slow broker cannot keep
	// the rebuild (and its memory) around for long.
	defaultRebuildTime = 10 * time.Second
	// rebuildListTime bounds listing the offsets: Kafka down at start
	// gives up then.
	rebuildListTime = 10 * time.Second
	// rebuildSpans is how many slices of the hour are read, newest first:
	// hitting a cap loses at most the slice it was reading, and the history
	// then starts at the oldest slice read whole.
	rebuildSpans = 6
	// rebuildIdle ends a slice whose partitions have sent nothing for this
	// long: the one way to get there is an aborted transaction at a slice's
	// end, whose records read_committed never shows.
	rebuildIdle = 3 * time.Second
)

// WithHistoryRebuild makes Serve rebuild the last hour of segment counts
// from the segments topic (cfg.Kafka) in the background, so GET
// /v1/segments?history=1h is full right after a restart. Without it the
// history starts when Serve does. A rebuild that fails is logged and the
// history is sampled from then on as without it.
func WithHistoryRebuild() Option {
	return func(s *Server) { s.rebuildHistory = true }
}

// rebuildLimits cap the work of a rebuild; past either the history starts
// where what was read is complete.
type rebuildLimits struct {
	records int
	time    time.Duration
}

// segmentChange is one enter (+1) or exit (-1) of a segment read back from
// the segments topic, at its Kafka record timestamp (unix ms).
type segmentChange struct {
	key   string // historyKey: entity + "/" + segment
	at    int64
	delta int64
}

// walkBack rebuilds each segment's counts from since on, given its count now
// (at until) and its changes: the count just before a change is the count
// after it less its delta, so walking the changes back from now gives every
// earlier count. A segment's points are oldest first: its count at since,
// then one per millisecond with changes (the count after them), so the last
// is now. Changes of segments not in now and changes before since are skipped;
// those after until (a clock ahead) still count, placed at until.
//
// It sorts and filters changes in place: a rebuild may hold millions.
func walkBack(changes []segmentChange, now map[string]int64, since, until int64) map[string][][2]int64 {
	kept := changes[:0]
	for _, c := range changes {
		if _, ok := now[c.key]; ok && c.at >= since {
			c.at = min(c.at, until)
			kept = append(kept, c)
		}
	}
	slices.SortStableFunc(kept, func(a, b segmentChange) int {
		return cmp.Or(strings.Compare(a.key, b.key), cmp.Compare(a.at, b.at))
	})
	out := make(map[string][][2]int64, len(now))
	for key, n := range now {
		i, _ := slices.BinarySearchFunc(kept, key, func(c segmentChange, k string) int { return strings.Compare(c.key, k) })
		j := i
		for j < len(kept) && kept[j].key == key {
			j++
		}
		mine := kept[i:j]
		for _, c := range mine {
			n -= c.delta
		}
		points := [][2]int64{{since, n}}
		for _, c := range mine {
			n += c.delta
			if last := &points[len(points)-1]; last[0] == c.at {
				last[1] = n
			} else {
				points = append(points, [2]int64{c.at, n})
			}
		}
		out[key] = points
	}
	return out
}

// rebuildStats says what a rebuild read, for its log line.
type rebuildStats struct {
	records int
	since   time.Time // where the rebuilt history starts
	capped  string    // why it starts later than an hour ago, if it does
}

// rebuild reads the last hour of the segments topic and seeds the history
// with every configured segment's counts over it.
func (s *Server) rebuild(ctx context.Context) (rebuildStats, error) {
	cfg := s.cfgNow.Load()
	topic := s.cfg.Kafka.Topics.Segments
	admin, err := kafka.NewClient(s.cfg.Kafka)
	if err != nil {
		return rebuildStats{}, err
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	lctx, cancel := context.WithTimeout(ctx, rebuildListTime)
	defer cancel()
	// Connected before the anchor is read, so its two reads stay close.
	if _, err := offsetsOf(adm.ListCommittedOffsets(lctx, topic)); err != nil {
		return rebuildStats{}, fmt.Errorf("cannot list the end offsets of %s: %w", topic, err)
	}

	// The anchor: each segment's count now, and the topic's end right after.
	// A change the stream made between the two reads (its store write is
	// done, its record not yet committed, or the other way round) makes the
	// walk back off by that many for the whole hour. A handful of members
	// on a sparkline is fine; locking the stream out to get it exact is not.
	now := make(map[string]int64, len(cfg.Segments))
	for i := range cfg.Segments {
		cs := &cfg.Segments[i]
		n, err := s.countWithin(ctx, cs)
		if err != nil {
			return rebuildStats{}, fmt.Errorf("cannot count segment %q: %w", cs.Name, err)
		}
		now[historyKey(cs)] = n
	}
	until := s.now()
	keys := make(map[string]string, len(now))
	for k := range now {
		keys[k] = k
	}
	ends, err := offsetsOf(adm.ListCommittedOffsets(lctx, topic))
	if err != nil {
		return rebuildStats{}, fmt.Errorf("cannot list the end offsets of %s: %w", topic, err)
	}
	// bounds[i] per partition is the first offset at or after times[i];
	// the last one is the end.
	times := make([]time.Time, rebuildSpans+1)
	bounds := make([]map[int32]int64, rebuildSpans+1)
	for i := range times {
		times[i] = until.Add(-historyKeep + time.Duration(i)*historyKeep/rebuildSpans)
	}
	bounds[rebuildSpans] = ends
	for i := rebuildSpans - 1; i >= 0; i-- {
		ms := times[i].UnixMilli()
		at, err := offsetsOf(adm.ListOffsetsAfterMilli(lctx, ms, topic))
		if err != nil {
			return rebuildStats{}, fmt.Errorf("cannot list the offsets of %s at %s: %w", topic, times[i].Format(time.RFC3339), err)
		}
		bounds[i] = map[int32]int64{}
		for p, end := range ends {
			o, ok := at[p]
			if !ok {
				o = end
			}
			// Listing by time ignores transactions: keep within the end.
			bounds[i][p] = max(0, min(o, bounds[i+1][p]))
		}
	}
	cancel()

	// Newest slice first: the walk back needs every change from now to a
	// time, so a cap cuts the oldest part of the hour off, not the newest.
	st := rebuildStats{since: until}
	var changes []segmentChange
	spanned := 0
	rctx, cancel := context.WithTimeout(ctx, s.rebuildLimits.time)
	defer cancel()
	for i := rebuildSpans - 1; i >= 0; i-- {
		spans := map[int32][2]int64{}
		size := 0
		for p, from := range bounds[i] {
			if to := bounds[i+1][p]; from < to {
				spans[p] = [2]int64{from, to}
				size += int(to - from)
			}
		}
		// Offsets, not records: control and aborted records cost a read too.
		if spanned+size > s.rebuildLimits.records {
			st.capped = fmt.Sprintf("over %d records", s.rebuildLimits.records)
			break
		}
		mark := len(changes)
		n, err := s.readSpans(rctx, topic, spans, func(r *kgo.Record) {
			c, ok := decodeChange(r)
			if !ok {
				return
			}
			// Keep one copy of each key, not one a record.
			if key, ok := keys[c.key]; ok {
				c.key = key
				changes = append(changes, c)
			}
		})
		if err != nil {
			changes = changes[:mark] // a slice counts only read whole
			if rctx.Err() != nil && ctx.Err() == nil {
				st.capped = fmt.Sprintf("over %s", s.rebuildLimits.time)
				break
			}
			return rebuildStats{}, err
		}
		st.records += n
		spanned += size
		st.since = times[i]
	}
	if ctx.Err() != nil {
		return rebuildStats{}, ctx.Err()
	}
	for key, points := range walkBack(changes, now, st.since.UnixMilli(), until.UnixMilli()) {
		s.history.seed(key, points, s.historyInterval, until.UnixMilli())
	}
	return st, nil
}

// offsetsOf returns the offsets listed for the one topic asked, by
// partition, or the first error.
func offsetsOf(listed kadm.ListedOffsets, err error) (map[int32]int64, error) {
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	err = nil
	listed.Each(func(o kadm.ListedOffset) {
		switch {
		case o.Err != nil:
			err = o.Err
		case o.Partition >= 0:
			out[o.Partition] = o.Offset
		}
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("the topic does not exist")
	}
	return out, nil
}

// readSpans reads spans (per partition, offsets [from, to)) with
// read_committed and calls fn for each data record in them. It returns how
// many records it saw.
func (s *Server) readSpans(ctx context.Context, topic string, spans map[int32][2]int64, fn func(*kgo.Record)) (int, error) {
	if len(spans) == 0 {
		return 0, nil
	}
	from := map[int32]kgo.Offset{}
	for p, r := range spans {
		from[p] = kgo.NewOffset().At(r[0])
	}
	cl, err := kafka.NewClient(s.cfg.Kafka,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	pending := len(spans)
	done := map[int32]bool{}
	seen, idle := 0, time.Now()
	for pending > 0 {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return seen, ctx.Err()
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && ferr == nil {
				ferr = fmt.Errorf("cannot read %s partition %d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return seen, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			rng, ok := spans[r.Partition]
			if !ok || done[r.Partition] || r.Offset < rng[0] {
				return
			}
			idle = time.Now()
			// The offset just before a span's end is a record, a control
			// record, or an aborted record that read_committed skips; the
			// first two are seen, the third by the record after it.
			if r.Offset >= rng[1]-1 {
				done[r.Partition] = true
				pending--
				cl.PauseFetchPartitions(map[string][]int32{topic: {r.Partition}})
			}
			if r.Offset < rng[1] && !r.Attrs.IsControl() {
				seen++
				fn(r)
			}
		})
		if time.Since(idle) > rebuildIdle {
			break
		}
	}
	return seen, nil
}

// decodeChange reads a segments-topic record. ok is false for anything but
// an enter or exit.
func decodeChange(r *kgo.Record) (segmentChange, bool) {
	rec, _, err := segment.DecodeRecordRaw(r.Value)
	if err != nil || rec.Segment == "" {
		return segmentChange{}, false
	}
	if rec.Entity == "" {
		rec.Entity = "user"
	}
	c := segmentChange{key: rec.Entity + "/" + rec.Segment, at: r.Timestamp.UnixMilli()}
	switch rec.Change {
	case segment.ChangeEnter:
		c.delta = 1
	case segment.ChangeExit:
		c.delta = -1
	default:
		return segmentChange{}, false
	}
	return c, true
}

// runRebuild rebuilds the history and logs what it did, or why it could not.
func (s *Server) runRebuild(ctx context.Context) {
	began := time.Now()
	st, err := s.rebuild(ctx)
	switch {
	case err != nil && ctx.Err() != nil:
	case err != nil:
		s.log.Warn("segment history: cannot rebuild the last hour from the segments topic; sampling from now on", "topic", s.cfg.Kafka.Topics.Segments, "err", err)
	case st.capped != "":
		s.log.Info("segment history rebuilt from the segments topic, capped", "records", st.records, "since", st.since.Format(time.RFC3339),
			"back", time.Since(st.since).Round(time.Second).String(), "capped", st.capped, "took", time.Since(began).Round(time.Millisecond).String())
	default:
		s.log.Info("segment history rebuilt from the segments topic", "records", st.records, "since", st.since.Format(time.RFC3339),
			"back", time.Since(st.since).Round(time.Second).String(), "took", time.Since(began).Round(time.Millisecond).String())
	}
}
