package stream

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// t0 is the test's "now" at start; event times are around it.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const testConfig = `
stream:
  allowed_lateness: 2d
  timer_interval: 20ms
features:
  - name: orders_1h
    agg: count
    event: Order Completed
    window: 1h
  - name: orders_30d
    agg: count
    event: Order Completed
    window: 30d
  - name: orders_lifetime
    agg: count
    event: Order Completed
  - name: revenue_24h
    agg: sum
    event: Order Completed
    field: properties.revenue
    window: 24h
  - name: max_order_7d
    agg: max
    event: Order Completed
    field: properties.revenue
    window: 7d
  - name: products_24h
    agg: distinct
    event: Product Viewed
    field: properties.product_id
    window: 24h
  - name: country
    agg: last
    field: traits.country
  - name: profile
    agg: last_by_key
    type: identify
    field: traits
  - name: recent
    agg: last_n
    event: Product Viewed
    field: properties.product_id
    n: 3
segments:
  - name: buyers
    rule: 'orders_lifetime >= 3'
  - name: odd_orders
    rule: 'int(orders_lifetime) % 2 == 1'
  - name: lapsing
    rule: 'orders_lifetime >= 2 && orders_30d == 0'
  - name: hot
    rule: 'orders_1h >= 1'
`

// clock is a settable time for Options.Now.
type clock struct{ ms atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.set(t); return c }
func (c *clock) now() time.Time   { return time.UnixMilli(c.ms.Load()).UTC() }
func (c *clock) set(t time.Time)  { c.ms.Store(t.UnixMilli()) }

// env is one test's Kafka, config and clock.
type env struct {
	t       testing.TB
	cfg     *config.Config
	brokers []string
	emb     *kafka.Embedded // the in-process broker; nil on real brokers
	clock   *clock
	store   *memStore
	prod    *kgo.Client
}

// newEnv starts an embedded kfake broker (or uses brokers) with fresh topics.
func newEnv(t testing.TB, brokers []string) *env {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kafka.Partitions = benchPartitions()
	var emb *kafka.Embedded
	if brokers == nil {
		emb, err = kafka.StartEmbedded(kafka.EmbeddedOptions{Partitions: cfg.Kafka.Partitions})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(emb.Close)
		brokers = emb.Addrs()
	}
	cfg.Kafka.Brokers = brokers
	prefix := testenv.Topic(t, "s")
	cfg.Kafka.Topics.Named(prefix)
	cfg.Stream.Group = prefix + ".group"
	cfg.DataDir = t.TempDir()
	e := &env{t: t, cfg: cfg, brokers: brokers, emb: emb, clock: newClock(t0), store: newMemStore()}
	e.prod, err = kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.prod.Close)
	if err := kafka.EnsureTopics(context.Background(), e.prod, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	return e
}

// anew is a new, empty embedded broker with e's topic names and group:
// the topics deleted and made again (another topic id each), or a wiped
// log.
func (e *env) anew() *env {
	e.t.Helper()
	e2 := newEnv(e.t, nil)
	e2.cfg.Kafka.Topics = e.cfg.Kafka.Topics
	e2.cfg.Stream.Group = e.cfg.Stream.Group
	if err := kafka.EnsureTopics(context.Background(), e2.prod, e2.cfg.Kafka); err != nil {
		e.t.Fatal(err)
	}
	return e2
}

func (e *env) processor(opts Options, dataDir string) *Processor {
	e.t.Helper()
	cfg := *e.cfg
	if dataDir != "" {
		cfg.DataDir = dataDir
	}
	opts.Now = e.clock.now
	opts.SessionTimeout = 6 * time.Second
	p, err := New(&cfg, e.store, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// run starts p and returns a stop function that waits for Run to return.
func (e *env) run(p *Processor) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-errc })
		return err
	}
	e.t.Cleanup(func() { stop() })
	return stop
}

// produce writes raw records to the events topic and waits for the acks.
func (e *env) produce(recs ...*kgo.Record) {
	e.t.Helper()
	for _, r := range recs {
		r.Topic = e.cfg.Kafka.Topics.Events
	}
	if err := e.prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

func eventRecord(t testing.TB, ev *event.Event) *kgo.Record {
	b, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Key: []byte(ev.EntityID()), Value: b}
}

func order(user, msgID string, at time.Time, revenue float64) *event.Event {
	return &event.Event{Type: event.Track, Event: "Order Completed", UserID: user, MessageID: msgID,
		Timestamp: at, ReceivedAt: at, Properties: map[string]any{"revenue": revenue}}
}

// endOffsets are the events topic's end offsets by partition.
func (e *env) endOffsets() map[int32]int64 {
	e.t.Helper()
	ends, err := kadm.NewClient(e.prod).ListEndOffsets(context.Background(), e.cfg.Kafka.Topics.Events)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	if len(out) == 0 {
		e.t.Fatalf("no end offsets for %s", e.cfg.Kafka.Topics.Events)
	}
	return out
}

// waitCaughtUp waits until the processors' tasks together reached the end
// of every partition.
func (e *env) waitCaughtUp(timeout time.Duration, ps ...*Processor) {
	e.t.Helper()
	ends := e.endOffsets()
	deadline := time.Now().Add(timeout)
	for {
		got := map[int32]int64{}
		for _, p := range ps {
			for part, n := range p.offsets() {
				got[part] = n
			}
		}
		done := true
		for part, end := range ends {
			if got[part] < end {
				done = false
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("processors did not catch up in %s: at %v, ends %v", timeout, got, ends)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tryCatchUp waits up to timeout for the processors to catch up.
func (e *env) tryCatchUp(timeout time.Duration, ps ...*Processor) bool {
	ends := e.endOffsets()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		got := map[int32]int64{}
		for _, p := range ps {
			for part, n := range p.offsets() {
				got[part] = n
			}
		}
		done := true
		for part, end := range ends {
			if got[part] < end {
				done = false
			}
		}
		if done {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// offsets are the next offsets of the processor's tasks.
func (p *Processor) offsets() map[int32]int64 {
	p.mu.Lock()
	tasks := make([]*task, 0, len(p.tasks))
	for _, t := range p.tasks {
		if !t.failed {
			tasks = append(tasks, t)
		}
	}
	p.mu.Unlock()
	out := map[int32]int64{}
	for _, t := range tasks {
		out[t.partition] = t.written.Load()
	}
	return out
}

// reference applies events once each (first messageId wins) with aggregate
// directly and returns every user's values and segments at now.
type reference struct {
	set  *aggregate.Set
	segs *segment.Set
	st   map[string]*aggregate.State
	seen map[string]bool
}

func newReference(t testing.TB, cfg *config.Config) *reference {
	p, err := New(cfg, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &reference{set: p.features, segs: p.segments, st: map[string]*aggregate.State{}, seen: map[string]bool{}}
}

func (r *reference) apply(ev *event.Event) {
	if r.seen[ev.MessageID] {
		return
	}
	r.seen[ev.MessageID] = true
	st := r.st[ev.EntityID()]
	if st == nil {
		st = r.set.NewState()
		r.st[ev.EntityID()] = st
	}
	r.set.Apply(st, ev)
}

func (r *reference) vector(id string, now time.Time) (map[string]any, []string) {
	vals := r.set.Values(r.st[id], now, nil)
	feats := map[string]any{}
	for i, n := range r.set.Names() {
		feats[n] = vals[i]
	}
	m := r.segs.Eval(vals, now, nil)
	members := r.segs.Members(m)
	sort.Strings(members)
	return feats, members
}

// check compares the store with the reference for every user.
func (r *reference) check(t testing.TB, store *memStore, now time.Time) {
	t.Helper()
	bad := 0
	for id := range r.st {
		want, wantSegs := r.vector(id, now)
		v, err := store.Get(context.Background(), entity, id)
		if err != nil {
			t.Errorf("user %s: %v", id, err)
			bad++
		} else if !reflect.DeepEqual(v.Features, want) || !reflect.DeepEqual(v.Segments, wantSegs) && len(v.Segments)+len(wantSegs) > 0 {
			t.Errorf("user %s:\n got %v %v\nwant %v %v", id, v.Features, v.Segments, want, wantSegs)
			bad++
		}
		if bad > 5 {
			t.Fatal("too many differences")
		}
	}
}

// checkMembers compares the store's member list of every segment with
// the reference's members at now, waiting up to 10 s for them: with early
// store writes the lists change after the vectors do.
func (r *reference) checkMembers(t testing.TB, store featurestore.Store, segments []config.Segment, now time.Time) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if r.membersDiffer(t, store, segments, now, nil) == "" {
			return
		}
	}
	r.membersDiffer(t, store, segments, now, t.Errorf)
}

// membersDiffer says how the store's member lists differ from the
// reference's ("": they do not), each difference also to report.
func (r *reference) membersDiffer(t testing.TB, store featurestore.Store, segments []config.Segment, now time.Time, report func(string, ...any)) string {
	t.Helper()
	diff := ""
	want := map[string][]string{}
	for id := range r.st {
		_, segs := r.vector(id, now)
		for _, s := range segs {
			want[s] = append(want[s], id)
		}
	}
	for _, s := range segments {
		var got []string
		for cursor := ""; ; {
			ids, next, err := store.SegmentMembers(context.Background(), entity, s.Name, cursor, 1000)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ids...)
			if cursor = next; next == "" {
				break
			}
		}
		slices.Sort(got)
		slices.Sort(want[s.Name])
		if !slices.Equal(got, want[s.Name]) {
			d := fmt.Sprintf("segment %s: the store's members %v, want %v", s.Name, got, want[s.Name])
			if report != nil {
				report("%s", d)
			}
			diff += d + "\n"
		}
	}
	return diff
}

// waitMatches waits until the store equals the reference.
func (r *reference) waitMatches(t testing.TB, store *memStore, now time.Time, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ok := true
		for id := range r.st {
			want, wantSegs := r.vector(id, now)
			v, err := store.Get(context.Background(), entity, id)
			if err != nil || !reflect.DeepEqual(v.Features, want) || !reflect.DeepEqual(v.Segments, wantSegs) && len(v.Segments)+len(wantSegs) > 0 {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.check(t, store, now)
}

// readTopic reads a topic from the start to its end, read_committed.
func readTopic(t testing.TB, e *env, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kafka.NewClient(e.cfg.Kafka, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Processors are stopped: every transaction is committed or aborted.
	// An empty topic returns at once. Otherwise the first poll may wait up
	// to 15 s for the broker (a fixed one-second idle wait returned nothing
	// under CI load: TestDedupeAndDeadLetters). After records arrive, a
	// partition is read when its last record is at most a commit marker
	// short of its last stable offset; once every partition with records
	// is, a poll that brings nothing for a second ends the read, and
	// before that only one that brings nothing for 5 s (a second alone cut
	// TestRestartResumes's read short under CI load once). Transaction
	// markers and aborted batches hold offsets but are never delivered, so
	// the end offset alone cannot say when the last record has been read.
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("topic %s partition %d end offset: %v", topic, o.Partition, o.Err)
		}
		total += o.Offset
	})
	var out []*kgo.Record
	if total == 0 {
		return out
	}
	read := func(last, stable map[int32]int64) bool {
		done := true
		ends.Each(func(o kadm.ListedOffset) {
			if l, ok := last[o.Partition]; o.Offset > 0 && (!ok || l+2 < stable[o.Partition]) {
				done = false
			}
		})
		return done
	}
	last, stable := map[int32]int64{}, map[int32]int64{}
	// A partition that has brought no record yet is waited for up to
	// unseenFor from the read's start, idle polls or not: the client
	// loads each partition's start offset on its own, and one load
	// retried after a metadata refresh (up to 5 s) let an idle poll end
	// the read with only some partitions read.
	unseen := func() bool {
		missing := false
		ends.Each(func(o kadm.ListedOffset) {
			if _, ok := last[o.Partition]; o.Offset > 0 && !ok {
				missing = true
			}
		})
		return missing
	}
	const unseenFor = 20 * time.Second
	began := time.Now()
	wait := 15 * time.Second
	for {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		fs := cl.PollFetches(ctx)
		// A poll that brings only errors (a partition's leader not known
		// yet, a fetch cut short) is not the end: it returned at once with
		// nothing, and all of TestIdentityKillMidMergeRealKafka's segment
		// changes once read as none. Poll again within the same wait.
		for fs.NumRecords() == 0 && ctx.Err() == nil && firstPollErr(fs) != nil {
			time.Sleep(50 * time.Millisecond)
			fs = cl.PollFetches(ctx)
		}
		cancel()
		if fs.NumRecords() == 0 {
			if err := firstPollErr(fs); err != nil {
				t.Fatalf("reading %s: %v", topic, err)
			}
			if unseen() && time.Since(began) < unseenFor {
				continue
			}
			if !read(last, stable) {
				// Cut short: say where each partition got, so that a test
				// failing on what it read tells a stalled partition (a
				// transaction left open holding its last stable offset)
				// from missing records (CI once read four users in five
				// as in no segment).
				lso, err := kadm.NewClient(cl).ListCommittedOffsets(context.Background(), topic)
				ends.Each(func(o kadm.ListedOffset) {
					now, _ := lso.Lookup(topic, o.Partition)
					t.Logf("reading %s: partition %d read to offset %d (none: -1), end offset %d; last stable offset %d now (%v), after %s without records",
						topic, o.Partition, lastOr(last, o.Partition), o.Offset, now.Offset, err, wait)
				})
			}
			return out
		}
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			stable[p.Partition] = p.LastStableOffset
			if n := len(p.Records); n > 0 {
				last[p.Partition] = p.Records[n-1].Offset
			}
		})
		wait = 5 * time.Second
		if read(last, stable) {
			wait = time.Second
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
}

func lastOr(last map[int32]int64, p int32) int64 {
	if l, ok := last[p]; ok {
		return l
	}
	return -1
}

// firstPollErr is fs's first error other than its context's end.
func firstPollErr(fs kgo.Fetches) (err error) {
	fs.EachError(func(_ string, _ int32, e error) {
		if err == nil && !errors.Is(e, context.DeadlineExceeded) && !errors.Is(e, context.Canceled) {
			err = e
		}
	})
	return err
}

// segmentChanges reads pulse.segments and checks the exactly-once
// invariants: no change_id twice, and per user and segment the changes
// alternate enter, exit, enter, ... It returns the final memberships.
func segmentChanges(t testing.TB, e *env) map[string][]string {
	t.Helper()
	state := map[string]map[string]bool{}
	ids := map[string]bool{}
	for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.Segments) {
		var rec segment.Record
		if err := json.Unmarshal(r.Value, &rec); err != nil {
			t.Fatal(err)
		}
		if ids[rec.ID] {
			t.Errorf("change %s (%s %s %s) written twice", rec.ID, rec.EntityID, rec.Change, rec.Segment)
		}
		ids[rec.ID] = true
		m := state[rec.EntityID]
		if m == nil {
			m = map[string]bool{}
			state[rec.EntityID] = m
		}
		in := rec.Change == segment.ChangeEnter
		if m[rec.Segment] == in {
			t.Errorf("user %s: %s %s twice in a row", rec.EntityID, rec.Change, rec.Segment)
		}
		m[rec.Segment] = in
	}
	out := map[string][]string{}
	for id, m := range state {
		for s, in := range m {
			if in {
				out[id] = append(out[id], s)
			}
		}
		sort.Strings(out[id])
	}
	return out
}

// load is a reproducible stream of events for n users: orders, product
// views, identifies, duplicates (same messageId again) and a few records
// that are not events.
func load(seed uint64, users, n int) (recs []*kgo.Record, evs []*event.Event) {
	rng := rand.New(rand.NewPCG(seed, 1))
	var prev []*event.Event
	for i := range n {
		user := fmt.Sprintf("u%d", rng.IntN(users))
		at := t0.Add(-time.Duration(rng.Int64N(int64(36 * time.Hour))))
		var ev *event.Event
		switch k := rng.IntN(20); {
		case k == 0 && len(prev) > 0:
			dup := *prev[rng.IntN(len(prev))]
			ev = &dup // a retry: same messageId
		case k == 1:
			recs = append(recs, &kgo.Record{Key: []byte(user), Value: []byte(`{"type":"track","userId":"` + user + `"}`)})
			continue
		case k < 8:
			ev = order(user, fmt.Sprintf("m%d-%d", seed, i), at, float64(rng.IntN(200)))
		case k < 18:
			ev = &event.Event{Type: event.Track, Event: "Product Viewed", UserID: user, MessageID: fmt.Sprintf("m%d-%d", seed, i),
				Timestamp: at, ReceivedAt: at, Properties: map[string]any{"product_id": fmt.Sprintf("p%d", rng.IntN(30))}}
		default:
			ev = &event.Event{Type: event.Identify, UserID: user, MessageID: fmt.Sprintf("m%d-%d", seed, i),
				Timestamp: at, ReceivedAt: at, Traits: map[string]any{"country": []string{"DE", "FR", "US"}[rng.IntN(3)]}}
		}
		prev = append(prev, ev)
		b, _ := ev.Marshal()
		recs = append(recs, &kgo.Record{Key: []byte(ev.EntityID()), Value: b})
		evs = append(evs, ev)
	}
	return recs, evs
}

// loadInto is load with every event applied to ref.
func loadInto(ref *reference, seed uint64, users, n int) []*kgo.Record {
	recs, evs := load(seed, users, n)
	for _, ev := range evs {
		ref.apply(ev)
	}
	return recs
}

// phasedLoad is load for a test that produces in phases: one batch per
// size, the i-th from seed+i, for users users, every event applied to ref.
// With retryEvery > 0, each phase after the first also carries retries
// (same messageId) of one in every retryEvery of the first phase's events,
// other ones in each phase: duplicates straddling whatever the test does
// between phases, which the stream must count once.
func phasedLoad(t testing.TB, ref *reference, seed uint64, users, retryEvery int, sizes ...int) [][]*kgo.Record {
	t.Helper()
	phases := make([][]*kgo.Record, len(sizes))
	var first []*event.Event
	for i, n := range sizes {
		recs, evs := load(seed+uint64(i), users, n)
		for _, ev := range evs {
			ref.apply(ev)
		}
		if i == 0 {
			first = evs
		} else if retryEvery > 0 {
			for j := i - 1; j < len(first); j += retryEvery {
				recs = append(recs, eventRecord(t, first[j]))
			}
		}
		phases[i] = recs
	}
	return phases
}

// memStore is an in-memory featurestore.Store.
type memStore struct {
	mu      sync.Mutex
	vecs    map[string]featurestore.Vector
	members map[string]map[string]bool
	writes  atomic.Int64
	onWrite func(batch []featurestore.Update)
}

// snapshot copies the store's vectors.
func (s *memStore) snapshot() map[string]featurestore.Vector {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.vecs)
}

func newMemStore() *memStore {
	return &memStore{vecs: map[string]featurestore.Vector{}, members: map[string]map[string]bool{}}
}

func (s *memStore) Get(_ context.Context, ent, id string) (featurestore.Vector, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vecs[ent+"/"+id]
	if !ok {
		return v, featurestore.ErrNotFound
	}
	return v, nil
}

func (s *memStore) GetMany(ctx context.Context, ent string, ids []string) ([]featurestore.Vector, []bool, error) {
	vs := make([]featurestore.Vector, len(ids))
	found := make([]bool, len(ids))
	for i, id := range ids {
		v, err := s.Get(ctx, ent, id)
		vs[i], found[i] = v, err == nil
	}
	return vs, found, nil
}

func (s *memStore) Write(_ context.Context, batch []featurestore.Update) error {
	if s.onWrite != nil {
		s.onWrite(batch)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range batch {
		v := u.Vector
		if u.Delete {
			delete(s.vecs, v.Entity+"/"+v.ID)
		} else {
			s.vecs[v.Entity+"/"+v.ID] = v
		}
		for _, seg := range u.Enter {
			m := s.members[seg]
			if m == nil {
				m = map[string]bool{}
				s.members[seg] = m
			}
			m[v.ID] = true
		}
		for _, seg := range u.Exit {
			delete(s.members[seg], v.ID)
		}
	}
	s.writes.Add(1)
	return nil
}

func (s *memStore) SegmentCount(_ context.Context, _, seg string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.members[seg])), nil
}

func (s *memStore) SegmentMembers(_ context.Context, _, seg, cursor string, limit int) ([]string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id := range s.members[seg] {
		if id > cursor {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	if len(ids) > limit {
		return ids[:limit], ids[limit-1], nil
	}
	return ids, "", nil
}

func (s *memStore) Close() error { return nil }

// partitionRecords produces evs to partition 0 of the events topic and
// reads them back, with their offsets, for a task's processBatch.
func (e *env) partitionRecords(evs ...*event.Event) []*kgo.Record {
	e.t.Helper()
	cl, err := kafka.NewClient(e.cfg.Kafka, append(kafka.ProducerOpts(), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{e.cfg.Kafka.Topics.Events: {0: kgo.NewOffset().AtStart()}}))...)
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for _, ev := range evs {
		r := eventRecord(e.t, ev)
		r.Topic, r.Partition = e.cfg.Kafka.Topics.Events, 0
		recs = append(recs, r)
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
	var got []*kgo.Record
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(got) < len(recs) && ctx.Err() == nil {
		got = append(got, cl.PollFetches(ctx).Records()...)
	}
	if len(got) != len(recs) {
		e.t.Fatalf("read back %d records of %d", len(got), len(recs))
	}
	return got
}
