package stream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
	json "github.com/goccy/go-json"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
)

// tester is the state of one file: the task under test and what it wrote.
type tester struct {
	t     *testing.T
	clock *clock
	store *memStore
	p     *Processor
	task  *task
	out   *memLog
	logs  *bytes.Buffer
	next  int64 // the next input offset to hand out
}

func (st *tester) close() {
	if st.task != nil {
		st.task.dropOpen()
		st.task.db.Close()
	}
}

func (st *tester) run(path string, c testCase) string {
	t := st.t
	fail := func(err error) string {
		t.Fatalf("%s:%d: %s: %v", path, c.line, c.cmd, err)
		return ""
	}
	if c.cmd != "config" && st.task == nil {
		t.Fatalf("%s:%d: config first", path, c.line)
	}
	if v, ok := c.args["now"]; ok {
		at, err := testTime(v)
		if err != nil {
			return fail(err)
		}
		st.clock.set(at)
	}
	if st.task != nil && st.task.open != nil && c.cmd != "batch" && c.cmd != "commit-open" && c.cmd != "config" {
		t.Fatalf("%s:%d: a transaction is kept open (stream.commit_interval): commit-open first", path, c.line)
	}
	var b strings.Builder
	switch c.cmd {
	case "commit-open":
		// The worker's commit of a transaction kept open (its interval is
		// up, or it was nudged).
		before := eventCounters()
		if st.task.open == nil {
			return fail(errors.New("no transaction is open"))
		}
		if err := st.task.commitOpenUnlock(context.Background()); err != nil {
			return fail(err)
		}
		st.counts(&b, before)
		st.written(&b, false)
	case "config":
		if err := st.start(strings.Join(c.input, "\n")); err != nil {
			return fail(err)
		}
		b.WriteString("ok")
	case "batch":
		recs, err := st.records(c.input)
		if err != nil {
			return fail(err)
		}
		hwm := recs[len(recs)-1].Offset + 1
		if v, ok := c.args["hwm"]; ok {
			if hwm, err = strconv.ParseInt(v, 10, 64); err != nil {
				return fail(err)
			}
		}
		before := eventCounters()
		point := c.args["crash"]
		st.p.opts.hook = func(at string, _ int32) error {
			if at == point {
				return fmt.Errorf("crash at %s", at)
			}
			return nil
		}
		err = st.task.processBatch(context.Background(), recs, hwm)
		st.p.opts.hook = nil
		if point != "" && err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
			st.written(&b, false)
			if err := st.reopen(&b); err != nil {
				return fail(err)
			}
			return b.String()
		}
		if err != nil {
			return fail(err)
		}
		if st.task.open != nil {
			b.WriteString("kept open\n")
		}
		st.counts(&b, before)
		st.written(&b, c.args["deadletters"] == "json")
	case "seed":
		if err := st.seed(c.args["id"], c.input); err != nil {
			return fail(err)
		}
		st.written(&b, false)
	case "resolved":
		if err := st.resolved(c.input); err != nil {
			return fail(err)
		}
		st.written(&b, false)
	case "tick":
		before := counterValue(mTimerFires)
		for more := true; more; {
			var err error
			if more, err = st.task.fire(context.Background()); err != nil {
				return fail(err)
			}
		}
		fmt.Fprintf(&b, "fired=%d\n", int(counterValue(mTimerFires)-before))
		st.written(&b, false)
	case "rfm":
		return st.rfmCommand(c, fail)
	case "vector":
		v, err := st.store.Get(context.Background(), entity, c.args["id"])
		if err != nil {
			return "not in the store"
		}
		feats, _ := json.Marshal(v.Features)
		fmt.Fprintf(&b, "segments=%v eventAt=%s\nfeatures=%s", v.Segments, testTimeString(v.EventAt), feats)
		if v.CanonicalID != "" {
			fmt.Fprintf(&b, "\ncanonical=%s", v.CanonicalID)
		}
	case "state":
		return st.state(c.args["id"])
	case "timers":
		it, err := st.task.db.NewIter(&pebble.IterOptions{LowerBound: pkTimer, UpperBound: prefixEnd(pkTimer)})
		if err != nil {
			return fail(err)
		}
		for it.First(); it.Valid(); it.Next() {
			k := it.Key()[len(pkTimer):]
			fmt.Fprintf(&b, "%s %s\n", testTimeString(time.UnixMilli(int64(beUint64(k)))), k[8:])
		}
		if err := it.Close(); err != nil {
			return fail(err)
		}
	case "meta":
		fmt.Fprintf(&b, "next=%d pending=%v", st.task.meta.next, st.task.meta.pending)
	case "searches":
		fmt.Fprintf(&b, "searches=%d", st.task.rfmSearches)
		st.task.rfmSearches = 0
	default:
		t.Fatalf("%s:%d: unknown command %s", path, c.line, c.cmd)
	}
	return b.String()
}

// start builds a processor of the config and a task of partition 0 on a
// fresh in-memory Pebble, as openTask would with an empty changelog.
func (st *tester) start(yaml string) error {
	st.close()
	cfg, err := config.Parse([]byte(yaml), "tester.yaml")
	if err != nil {
		return err
	}
	st.clock, st.store, st.logs, st.next = newClock(t0), newMemStore(), &bytes.Buffer{}, 0
	log := slog.New(slog.NewTextHandler(st.logs, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	// Re-score chunks cut by TimerChunk alone (chunk=), not by time: the
	// same chunks on a loaded machine.
	if st.p, err = New(cfg, st.store, Options{Log: log, Now: st.clock.now, RescoreBudget: time.Hour}); err != nil {
		return err
	}
	if st.task, err = memLogTask(st.p, 0, "", vfs.NewMem(), log); err != nil {
		return err
	}
	st.out = st.task.out.(*memLog)
	st.out.committed = nil
	st.logs.Reset()
	return nil
}

// memLogTask is partition part's task of p on a fresh Pebble in dir of fs
// (nil: the disk), as openTask makes it with an empty changelog, its
// transactions going to a memLog (task.out).
func memLogTask(p *Processor, part int32, dir string, fs vfs.FS, log *slog.Logger) (*task, error) {
	t := p.newTask(part)
	var err error
	if t.db, t.fault, err = openPebble(dir, fs, log, 32<<20); err != nil {
		return nil, err
	}
	t.out = &memLog{}
	t.meta = meta{changelog: -1, segFP: p.segments.Fingerprint()}
	if t.seen, err = buildSeenFilter(t.db); err != nil {
		return nil, err
	}
	if err := t.openMoved(); err != nil {
		return nil, err
	}
	return t, t.activate(context.Background())
}

// reopen replaces the task by a new one on the same Pebble, as the
// processor reopens a failed task: what restore and rewritePending do,
// with the changelog from memory.
func (st *tester) reopen(b *strings.Builder) error {
	ctx := context.Background()
	st.out.open = nil // the new producer's fence aborts it
	t := st.p.newTask(0)
	t.db, t.fault, t.out = st.task.db, st.task.fault, st.out
	v, closer, err := t.db.Get(pkMeta)
	if err != nil {
		return err
	}
	t.meta, err = decodeMeta(v)
	closer.Close()
	if err != nil {
		return err
	}
	ib := t.db.NewIndexedBatch()
	defer ib.Close()
	n := 0
	for _, r := range st.out.all {
		if r.Topic == st.p.cfg.Kafka.Topics.State && r.Offset > t.meta.changelog {
			if err := t.applyChangelog(ib, r, true, st.clock.now()); err != nil {
				return err
			}
			t.meta.changelog = r.Offset
			n++
		}
	}
	ib.Set(pkMeta, t.meta.encode(), nil)
	if err := ib.Commit(pebble.Sync); err != nil {
		return err
	}
	if t.seen, err = buildSeenFilter(t.db); err != nil {
		return err
	}
	if err := t.openMoved(); err != nil {
		return err
	}
	if err := t.loadActivations(); err != nil {
		return err
	}
	if err := t.syncRFM(); err != nil {
		return err
	}
	if err := t.rewritePending(ctx); err != nil {
		return err
	}
	st.task = t
	fmt.Fprintf(b, "reopened: next=%d pending=%v, %d changelog records replayed\n", t.meta.next, t.meta.pending, n)
	return nil
}

// records reads the record lines of a batch.
func (st *tester) records(lines []string) ([]*kgo.Record, error) {
	var recs []*kgo.Record
	for _, l := range lines {
		toks, err := splitTokens(l)
		if err != nil {
			return nil, err
		}
		r := &kgo.Record{Topic: st.p.cfg.Kafka.Topics.Events, Offset: st.next}
		ev := &event.Event{Type: event.Track}
		var typ, key, at, received string
		raw := false
		fields := map[string]*string{"type": &typ, "key": &key, "event": &ev.Event, "id": &ev.MessageID,
			"user": &ev.UserID, "anon": &ev.AnonymousID, "prev": &ev.PreviousID, "t": &at, "received": &received}
		for _, tk := range toks {
			if f := fields[tk.key]; f != nil {
				*f = tk.val
				continue
			}
			switch name, v := tk.key, tk.val; {
			case name == "offset":
				if r.Offset, err = strconv.ParseInt(v, 10, 64); err != nil {
					return nil, err
				}
			case name == "raw":
				r.Value, raw = []byte(v), true
			case strings.HasPrefix(name, "p."):
				ev.Properties = withValue(ev.Properties, name[2:], v)
			case strings.HasPrefix(name, "tr."):
				ev.Traits = withValue(ev.Traits, name[3:], v)
			case strings.HasPrefix(name, "c."):
				ev.Context = withValue(ev.Context, name[2:], v)
			default:
				return nil, fmt.Errorf("unknown record field %q", name)
			}
		}
		if typ != "" {
			ev.Type = event.Type(typ)
		}
		if key != "" {
			r.Key = []byte(key)
		}
		if !raw {
			if ev.Timestamp, err = testTime(cmp(at, "0")); err != nil {
				return nil, err
			}
			if ev.ReceivedAt, err = testTime(cmp(received, cmp(at, "0"))); err != nil {
				return nil, err
			}
			if r.Value, err = ev.Marshal(); err != nil {
				return nil, err
			}
			if r.Key == nil {
				r.Key = []byte(ev.EntityID())
			}
		}
		st.next = r.Offset + 1
		recs = append(recs, r)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("no records")
	}
	return recs, nil
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func withValue(m map[string]any, k, v string) map[string]any {
	if m == nil {
		m = map[string]any{}
	}
	var x any
	if json.Unmarshal([]byte(v), &x) != nil {
		x = v
	}
	m[k] = x
	return m
}

// written prints the warnings logged and the transactions committed since
// the last command.
// counts writes the events counted since before, by result.
func (st *tester) counts(b *strings.Builder, before map[string]float64) {
	after := eventCounters()
	var counts []string
	for _, r := range []string{"applied", "ignored", "duplicate", "late", "invalid"} {
		counts = append(counts, fmt.Sprintf("%s=%d", r, int(after[r]-before[r])))
	}
	b.WriteString(strings.Join(counts, " ") + "\n")
}

func (st *tester) written(b *strings.Builder, fullDeadLetters bool) {
	for _, l := range strings.Split(strings.TrimSpace(st.logs.String()), "\n") {
		if l != "" {
			b.WriteString("log: " + l + "\n")
		}
	}
	st.logs.Reset()
	for _, txn := range st.out.committed {
		var lines []string
		for _, r := range txn {
			lines = append(lines, st.describe(r, fullDeadLetters))
		}
		slices.Sort(lines)
		b.WriteString(strings.Join(lines, "\n") + "\ncommit\n")
	}
	st.out.committed = nil
}

// describe is one line for a committed record.
func (st *tester) describe(r *kgo.Record, fullDeadLetters bool) string {
	tp := st.p.cfg.Kafka.Topics
	switch r.Topic {
	case tp.Segments:
		var rec segment.Record
		if err := json.Unmarshal(r.Value, &rec); err != nil {
			return "segment: " + err.Error()
		}
		return fmt.Sprintf("segment %s %s %s at=%s", rec.Change, rec.Segment, rec.EntityID, testTimeString(rec.At))
	case tp.Invalid:
		if fullDeadLetters {
			return "dead-letter " + string(r.Value)
		}
		dl, err := event.DecodeDeadLetter(r.Value)
		if err != nil {
			return "dead-letter: " + err.Error()
		}
		return fmt.Sprintf("dead-letter %s %s/%d/%d key=%s messageId=%q field=%q error=%q",
			dl.Reason, dl.Topic, dl.Partition, dl.Offset, r.Key, dl.MessageID, dl.Field, dl.Error)
	case tp.Activations:
		_, fp, _ := strings.Cut(string(r.Key), "/")
		return fmt.Sprintf("activation %s at %s", st.featureOf(fp), r.Value)
	case tp.State:
		return "state " + st.describeState(string(r.Key), r.Value)
	case tp.IdentityRequests:
		q, err := identity.DecodeRequest(r.Value)
		if err != nil {
			return "link-request: " + err.Error()
		}
		return fmt.Sprintf("link-request %s %s -> %s", q.Kind, q.From, q.To)
	case tp.Resolved:
		rr, err := decodeResolved(r.Value)
		if err != nil {
			return "resolved: " + err.Error()
		}
		s := fmt.Sprintf("resolved %s key=%s %s -> %s", rr.Kind, r.Key, rr.From, rr.To)
		if rr.Kind == resolvedEvent {
			ev, _ := event.Unmarshal(rr.Event)
			s += " messageId=" + ev.MessageID
		}
		return s
	case tp.Traits:
		return st.describeTrait(r)
	}
	return fmt.Sprintf("%s %s", r.Topic, r.Key)
}

// describeState says what a changelog record holds.
func (st *tester) describeState(k string, v []byte) string {
	switch {
	case k == clResolvedKey:
		next, _ := binary.Varint(v)
		return fmt.Sprintf("%s next=%d", k, next)
	case k == clOffsetKey:
		next, pending, err := decodeOffsetValue(v)
		if err != nil {
			return k + ": " + err.Error()
		}
		return fmt.Sprintf("%s next=%d pending=%v", k, next, pending)
	case strings.HasPrefix(k, clActivationPrefix):
		k = clActivationPrefix + st.featureOf(k[len(clActivationPrefix):])
	}
	if v == nil {
		return k + " deleted"
	}
	switch {
	case strings.HasPrefix(k, clEntityPrefix):
		_, memb, auto, err := splitEntityValue(v)
		if err != nil {
			return k + ": " + err.Error()
		}
		m, _, _ := st.p.segments.DecodeMembership(memb, nil)
		members := st.p.segments.Members(m)
		slices.Sort(members)
		line := fmt.Sprintf("%s members=%v", k, members)
		if rec, err := decodeAutoRecord(auto); auto != nil && (err != nil || !rec.empty()) {
			line = st.describeAuto(line, auto) // the automatic record in the value
		}
		return line
	case strings.HasPrefix(k, clAutoPrefix):
		return st.describeAuto(k, v)
	case strings.HasPrefix(k, clSeenPrefix):
		sb, err := decodeSeenBatch(v)
		if err != nil {
			return k + ": " + err.Error()
		}
		slices.Sort(sb.ids)
		return fmt.Sprintf("%s ids=%v at=%s", k, sb.ids, testTimeString(time.UnixMilli(sb.seenMs)))
	}
	return fmt.Sprintf("%s = %s", k, v)
}

// featureOf names the feature of a fingerprint in hex.
func (st *tester) featureOf(fp string) string {
	want, _ := strconv.ParseUint(fp, 16, 64)
	for i, name := range st.p.features.Names() {
		if got, ok := st.p.features.Fingerprint(i); ok && got == want {
			return name
		}
	}
	return fp
}

// state reads an entity from Pebble, not the task's cache.
func (st *tester) state(id string) string {
	v, closer, err := st.task.db.Get(key(pkEntity, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return "not in Pebble"
	}
	if err != nil {
		return err.Error()
	}
	defer closer.Close()
	due, cl, err := splitLocalValue(v)
	if err != nil {
		return err.Error()
	}
	state, memb, _, err := splitEntityValue(cl)
	if err != nil {
		return err.Error()
	}
	s, err := st.p.features.DecodeState(state)
	if err != nil {
		return err.Error()
	}
	now := st.clock.now()
	vals := st.p.features.Values(s, now, nil)
	feats := map[string]any{}
	for i, n := range st.p.features.Names() {
		feats[n] = vals[i]
	}
	m, _, _ := st.p.segments.DecodeMembership(memb, nil)
	members := st.p.segments.Members(m)
	slices.Sort(members)
	j, _ := json.Marshal(feats)
	timer := "none"
	if due != 0 {
		timer = testTimeString(time.UnixMilli(due))
	}
	return fmt.Sprintf("timer=%s members=%v\nvalues=%s", timer, members, j)
}

// testTime reads a duration from t0 (a leading - goes back).
func testTime(s string) (time.Time, error) {
	sign := time.Duration(1)
	switch {
	case strings.HasPrefix(s, "-"):
		sign, s = -1, s[1:]
	case strings.HasPrefix(s, "+"):
		s = s[1:]
	}
	if s == "0" {
		return t0, nil
	}
	d, err := config.ParseDuration(s)
	if err != nil {
		return time.Time{}, err
	}
	return t0.Add(sign * d.D()), nil
}

// testTimeString writes a time as testTime reads it.
func testTimeString(at time.Time) string {
	if at.IsZero() {
		return "none"
	}
	d, sign := at.Sub(t0), "+"
	if d == 0 {
		return "0"
	}
	if d < 0 {
		d, sign = -d, "-"
	}
	s := sign
	if days := d / (24 * time.Hour); days > 0 {
		s += strconv.Itoa(int(days)) + "d"
	}
	if rest := d % (24 * time.Hour); rest > 0 {
		r := rest.String() // 1h0m0s: drop the zero units
		if strings.HasSuffix(r, "m0s") {
			r = r[:len(r)-2]
		}
		if strings.HasSuffix(r, "h0m") {
			r = r[:len(r)-2]
		}
		s += r
	}
	return s
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// samples is how many observations histogram h holds.
func samples(h prometheus.Metric) uint64 {
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		return 0
	}
	return m.GetHistogram().GetSampleCount()
}

// histogram is how many observations h holds, and their sum.
func histogram(h prometheus.Metric) (uint64, float64) {
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		return 0, 0
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

func eventCounters() map[string]float64 {
	out := map[string]float64{}
	for _, r := range []string{"applied", "ignored", "duplicate", "late", "invalid"} {
		out[r] = counterValue(mEvents.WithLabelValues(r))
	}
	return out
}

// memLog is a partitionLog in memory: all holds the committed records,
// committed each transaction's since the tester last printed them,
// offsets counted per topic and partition.
type memLog struct {
	open      []*kgo.Record
	all       []*kgo.Record
	committed [][]*kgo.Record
	offsets   map[string]int64
}

func (l *memLog) BeginTransaction() error {
	if l.open != nil {
		return fmt.Errorf("a transaction is open")
	}
	l.open = []*kgo.Record{}
	return nil
}

func (l *memLog) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	if l.offsets == nil {
		l.offsets = map[string]int64{}
	}
	tp := r.Topic + "/" + strconv.Itoa(int(r.Partition))
	r.Offset = l.offsets[tp]
	l.offsets[tp]++
	l.open = append(l.open, r)
	promise(r, nil)
}

func (l *memLog) Flush(context.Context) error { return nil }

func (l *memLog) EndTransaction(_ context.Context, commit kgo.TransactionEndTry) error {
	if commit == kgo.TryCommit {
		l.committed = append(l.committed, l.open)
		l.all = append(l.all, l.open...)
	}
	l.open = nil
	return nil
}

func (l *memLog) startOffset(context.Context) (int64, bool, error) { return 0, true, nil }

// resolved writes the moves of lines ("move from=A to=U [t=T]", as the
// linker does) to the resolved topic, then hands the task every resolved
// record committed that it has not read: those moves and the transfers
// and events the task itself forwarded (the tester's one partition holds
// every entity).
func (st *tester) resolved(lines []string) error {
	tp := st.p.cfg.Kafka.Topics
	if len(lines) > 0 {
		if err := st.out.BeginTransaction(); err != nil {
			return err
		}
		for _, l := range lines {
			toks, err := splitTokens(l)
			if err != nil {
				return err
			}
			rr := resolved{Kind: resolvedMove}
			for _, tk := range toks {
				switch tk.key {
				case "move":
				case "from":
					rr.From = tk.val
				case "to":
					rr.To = tk.val
				case "t":
					if rr.At, err = testTime(tk.val); err != nil {
						return err
					}
				default:
					return fmt.Errorf("unknown move field %q", tk.key)
				}
			}
			st.out.Produce(context.Background(), &kgo.Record{Topic: tp.Resolved, Key: []byte(rr.From), Value: encodeResolved(rr)}, func(*kgo.Record, error) {})
		}
		if err := st.out.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
			return err
		}
		st.out.committed = st.out.committed[:len(st.out.committed)-1] // the linker's, not the task's
	}
	var recs []*kgo.Record
	for _, r := range st.out.all {
		if r.Topic == tp.Resolved && r.Offset >= st.task.meta.resolvedNext {
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	st.task.addResolved(recs)
	return st.task.applyResolved(context.Background())
}

// seed hands the task a backfill seed of entity id: the events of lines
// (record lines, not put on the input) in one state, cut at the task's
// activation of every feature, as pulse backfill features makes it.
func (st *tester) seed(id string, lines []string) error {
	saved := st.next
	recs, err := st.records(lines)
	st.next = saved
	if err != nil {
		return err
	}
	state := st.p.features.NewState()
	for _, r := range recs {
		ev, err := event.Unmarshal(r.Value)
		if err != nil {
			return err
		}
		if _, err := st.p.features.Apply(state, ev); err != nil {
			return err
		}
	}
	var cuts []aggregate.SeedCut
	for fp, at := range st.task.act {
		cuts = append(cuts, aggregate.SeedCut{Fingerprint: fp, Cut: at, Seen: at})
	}
	slices.SortFunc(cuts, func(a, b aggregate.SeedCut) int { return cmpUint(a.Fingerprint, b.Fingerprint) })
	r := &kgo.Record{Topic: st.p.cfg.Kafka.Topics.Seeds, Key: []byte(id), Value: aggregate.AppendSeed(nil, cuts, state), Offset: st.task.meta.seedNext}
	return st.task.applySeeds(context.Background(), []*kgo.Record{r})
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
