package backfill

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/internal/testenv"
)

const testYAML = `
features:
  - name: orders_1h
    agg: count
    event: Order Completed
    window: 1h
  - name: orders_lifetime
    agg: count
    event: Order Completed
  - name: revenue_24h
    agg: sum
    event: Order Completed
    field: properties.revenue
    window: 24h
  - name: last_order_at
    agg: last
    event: Order Completed
    field: timestamp
  - name: plan
    agg: last
    type: identify
    field: traits.plan
  - name: pages_7d
    agg: count
    type: page
    window: 7d
  - name: products_7d
    agg: distinct
    event: Product Viewed
    field: properties.product_id
    window: 7d
  - name: avg_order
    expr: 'orders_lifetime > 0 ? revenue_24h / orders_lifetime : 0'
models:
  - name: buyer
    path: buyer.json
    features: [orders_lifetime, revenue_24h]
    labels: ["no", "yes"]
`

// setup gives a config, a history Reader on a fresh database of the shared
// ClickHouse, and a func inserting events into it.
func setup(t *testing.T) (*config.Config, *history.Reader, func(...*event.Event)) {
	t.Helper()
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	cfg, err := config.Parse([]byte(testYAML), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClickHouse.Addr, cfg.ClickHouse.Database = native, db
	cfg.Dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(cfg.Dir, "buyer.json"), []byte(`{"intercept": -1, "weights": {"orders_lifetime": 0.5, "revenue_24h": 0.01}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	conn, err := history.Open(cfg.ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := history.Migrate(context.Background(), conn, db); err != nil {
		t.Fatal(err)
	}
	insert := func(evs ...*event.Event) {
		t.Helper()
		if err := history.InsertEvents(context.Background(), conn, db, evs); err != nil {
			t.Fatal(err)
		}
	}
	return cfg, history.NewReader(conn, db), insert
}

var msgSeq struct {
	sync.Mutex
	n int
}

func ev(typ event.Type, user, name string, at time.Time, props, traits map[string]any) *event.Event {
	msgSeq.Lock()
	msgSeq.n++
	id := fmt.Sprintf("m%d", msgSeq.n)
	msgSeq.Unlock()
	return &event.Event{Type: typ, MessageID: id, UserID: user, Event: name, Properties: props, Traits: traits,
		Timestamp: at.UTC(), ReceivedAt: at.UTC().Add(time.Second)}
}

func order(user string, at time.Time, revenue float64) *event.Event {
	return ev(event.Track, user, "Order Completed", at, map[string]any{"revenue": revenue}, nil)
}

// TestTrainingSetPointInTime: an event at the label's time is excluded, one
// a millisecond earlier is included; replays collapse; entities without
// history get empty features.
func TestTrainingSetPointInTime(t *testing.T) {
	cfg, r, insert := setup(t)
	T := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	early := order("u1", T.Add(-time.Millisecond), 10)
	insert(
		early,
		order("u1", T, 100),
		order("u1", T.Add(time.Hour), 1000),
		ev(event.Identify, "u1", "", T.Add(-time.Hour), nil, map[string]any{"plan": "pro"}),
		ev(event.Identify, "u1", "", T, nil, map[string]any{"plan": "enterprise"}),
	)
	insert(early) // a replay of the same message
	labels, err := ReadLabelsCSV(strings.NewReader("entity_id,timestamp,label\n" +
		"u1,2024-03-01T12:00:00Z,1\n" +
		"u2,1709294400000,0\n" +
		"u1,2024-03-01T13:30:00.000Z,1\n"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := TrainingSet(context.Background(), cfg, r, labels,
		[]string{"orders_lifetime", "orders_1h", "revenue_24h", "last_order_at", "plan", "avg_order"}, TrainingSetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := rows.WriteCSV(&out); err != nil {
		t.Fatal(err)
	}
	want := "entity_id,timestamp,label,orders_lifetime,orders_1h,revenue_24h,last_order_at,plan,avg_order\n" +
		fmt.Sprintf("u1,2024-03-01T12:00:00.000Z,1,1,1,10,%d,pro,10\n", T.UnixMilli()-1) +
		"u2,2024-03-01T12:00:00.000Z,0,0,0,0,0,,0\n" +
		fmt.Sprintf("u1,2024-03-01T13:30:00.000Z,1,3,1,1110,%d,enterprise,370\n", T.Add(time.Hour).UnixMilli())
	if out.String() != want {
		t.Errorf("training set:\n%s\nwant:\n%s", out.String(), want)
	}

	// The same through a labels query and into a table.
	q := "SELECT 'u1' AS entity_id, toInt64(" + fmt.Sprint(T.UnixMilli()) + ") AS timestamp, 1 AS label"
	qlabels, err := LabelsFromQuery(context.Background(), r, q)
	if err != nil {
		t.Fatal(err)
	}
	rows, err = TrainingSet(context.Background(), cfg, r, qlabels, []string{"orders_lifetime", "plan", "last_order_at"}, TrainingSetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := rows.WriteTable(context.Background(), r, "train"); err != nil {
		t.Fatal(err)
	}
	var n float64
	var plan string
	if err := r.Conn().QueryRow(context.Background(), "SELECT orders_lifetime, plan FROM "+r.Table("train")).Scan(&n, &plan); err != nil {
		t.Fatal(err)
	}
	if n != 1 || plan != "pro" {
		t.Errorf("table row: orders_lifetime %v plan %q", n, plan)
	}
}

// memStore is a featurestore.Store in memory, for the tests.
type memStore struct {
	mu   sync.Mutex
	vecs map[string]featurestore.Vector
}

func newMemStore() *memStore { return &memStore{vecs: map[string]featurestore.Vector{}} }

func (s *memStore) Get(_ context.Context, entity, id string) (featurestore.Vector, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vecs[entity+"/"+id]
	if !ok {
		return v, featurestore.ErrNotFound
	}
	return v, nil
}

func (s *memStore) GetMany(ctx context.Context, entity string, ids []string) ([]featurestore.Vector, []bool, error) {
	vecs, found := make([]featurestore.Vector, len(ids)), make([]bool, len(ids))
	for i, id := range ids {
		v, err := s.Get(ctx, entity, id)
		vecs[i], found[i] = v, err == nil
	}
	return vecs, found, nil
}

func (s *memStore) Write(_ context.Context, batch []featurestore.Update) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range batch {
		s.vecs[u.Vector.Entity+"/"+u.Vector.ID] = u.Vector
	}
	return nil
}

func (s *memStore) SegmentCount(context.Context, string, string) (int64, error) { return 0, nil }
func (s *memStore) SegmentMembers(context.Context, string, string, string, int) ([]string, string, error) {
	return nil, "", nil
}
func (s *memStore) Close() error { return nil }

// randomHistory makes n users' events over ten days before now, with some
// duplicates (replays), in the order a stream would have received them.
func randomHistory(rng *rand.Rand, users int, now time.Time) (arrival []*event.Event) {
	names := []string{"Order Completed", "Product Viewed", "Session Started"}
	for u := range users {
		user := fmt.Sprintf("user-%d", u)
		for range rng.IntN(40) {
			at := now.Add(-time.Duration(rng.Int64N(int64(10 * 24 * time.Hour))))
			var e *event.Event
			switch k := rng.IntN(10); {
			case k < 6:
				name := names[rng.IntN(len(names))]
				e = ev(event.Track, user, name, at, map[string]any{"revenue": float64(rng.IntN(20000)) / 100, "product_id": fmt.Sprint("p", rng.IntN(20))}, nil)
			case k < 8:
				e = ev(event.Page, user, "", at, nil, nil)
			default:
				e = ev(event.Identify, user, "", at, nil, map[string]any{"plan": []string{"free", "pro"}[rng.IntN(2)]})
			}
			// Received up to ten minutes late.
			e.ReceivedAt = at.Add(time.Duration(rng.Int64N(int64(10 * time.Minute))))
			arrival = append(arrival, e)
		}
	}
	sort.SliceStable(arrival, func(i, j int) bool { return arrival[i].ReceivedAt.Before(arrival[j].ReceivedAt) })
	return arrival
}

// online applies events in arrival order, each message once, as the stream
// does, and returns each user's values at now.
func online(t *testing.T, cfg *config.Config, arrival []*event.Event, now time.Time) map[string]map[string]any {
	t.Helper()
	set, err := aggregate.Compile(cfg.Features, aggregate.Options{AllowedLateness: cfg.Stream.AllowedLateness.D()})
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]*aggregate.State{}
	seen := map[string]bool{}
	for _, e := range arrival {
		if seen[e.MessageID] {
			continue
		}
		seen[e.MessageID] = true
		st := states[e.EntityID()]
		if st == nil {
			st = set.NewState()
			states[e.EntityID()] = st
		}
		if _, err := set.Apply(st, e); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]map[string]any{}
	for id, st := range states {
		vals := set.Values(st, now, nil)
		m := map[string]any{}
		for i, n := range set.Names() {
			m[n] = vals[i]
		}
		out[id] = m
	}
	return out
}

// TestBackfillEqualsStreaming replays a random history into a store and
// compares with the values of the same events applied as the stream would,
// then checks that Verify agrees and catches a corrupted value.
func TestBackfillEqualsStreaming(t *testing.T) {
	cfg, r, insert := setup(t)
	now := time.Date(2024, 3, 11, 9, 30, 0, 123e6, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	arrival := randomHistory(rng, 300, now)
	// Replays: some events are delivered twice.
	dups := slices.Clone(arrival[:50])
	insert(arrival...)
	insert(dups...)
	want := online(t, cfg, append(arrival, dups...), now)

	store := newMemStore()
	rep, err := Features(context.Background(), cfg, r, store, FeaturesOptions{Now: now, BatchSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entities != int64(len(want)) || rep.Events != int64(len(arrival)) {
		t.Errorf("report: %+v, want %d entities, %d events", rep, len(want), len(arrival))
	}
	for id, w := range want {
		v, err := store.Get(context.Background(), "user", id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		for name, x := range w {
			if !same(v.Features[name], x) {
				t.Errorf("%s %s: backfill %v, streaming %v", id, name, v.Features[name], x)
			}
		}
	}

	vr, err := Verify(context.Background(), cfg, r, store, VerifyOptions{Sample: 100})
	if err != nil {
		t.Fatal(err)
	}
	if vr.Sampled != 100 || vr.Mismatches() != 0 || len(vr.Missing) != 0 {
		var b strings.Builder
		vr.Write(&b)
		t.Fatalf("verify after backfill:\n%s", b.String())
	}

	// Corrupt one value of a sampled entity.
	victim := "user-7"
	v, _ := store.Get(context.Background(), "user", victim)
	v.Features["revenue_24h"] = 123456.0
	store.Write(context.Background(), []featurestore.Update{{Vector: v}})
	vr, err = Verify(context.Background(), cfg, r, store, VerifyOptions{Entities: []string{victim, "user-8", "nobody"}})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	vr.Write(&b)
	if vr.Mismatches() != 1 || len(vr.Missing) != 1 {
		t.Fatalf("verify after corruption:\n%s", b.String())
	}
	for _, f := range vr.Features {
		if f.Feature == "revenue_24h" && (f.Mismatches != 1 || f.Examples[0].EntityID != victim || f.Examples[0].Online != 123456.0) {
			t.Errorf("revenue_24h check: %+v", f)
		}
	}
	if !strings.Contains(b.String(), "revenue_24h user-7: online 123456") {
		t.Errorf("report does not name the mismatch:\n%s", b.String())
	}
	t.Logf("verify report:\n%s", b.String())
}

// TestFeaturesKeepsOtherFeatures: a backfill of one feature leaves the
// other features and the segments of a stored vector alone.
func TestFeaturesKeepsOtherFeatures(t *testing.T) {
	cfg, r, insert := setup(t)
	now := time.Date(2024, 3, 11, 0, 0, 0, 0, time.UTC)
	insert(order("u1", now.Add(-time.Hour), 5), order("u1", now.Add(-48*time.Hour), 7))
	store := newMemStore()
	store.Write(context.Background(), []featurestore.Update{{Vector: featurestore.Vector{Entity: "user", ID: "u1",
		Features: map[string]any{"orders_lifetime": 99.0, "custom": "x"}, Segments: []string{"vip"}}}})
	if _, err := Features(context.Background(), cfg, r, store, FeaturesOptions{Now: now, Features: []string{"revenue_24h"}, Since: now.Add(-7 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	v, _ := store.Get(context.Background(), "user", "u1")
	if v.Features["revenue_24h"] != 5.0 || v.Features["orders_lifetime"] != 99.0 || v.Features["custom"] != "x" || !slices.Equal(v.Segments, []string{"vip"}) {
		t.Errorf("vector: %+v", v)
	}
}

func TestPredict(t *testing.T) {
	cfg, r, insert := setup(t)
	at := time.Date(2024, 3, 11, 0, 0, 0, 0, time.UTC)
	insert(order("u1", at.Add(-time.Hour), 100), order("u1", at.Add(-2*time.Hour), 100), order("u2", at.Add(time.Hour), 100))
	var got []Prediction
	err := Predict(context.Background(), cfg, r, "buyer", PredictOptions{At: at, Entities: []string{"u1", "u2", "u3"}}, func(p Prediction) error {
		got = append(got, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(got, func(i, j int) bool { return got[i].EntityID < got[j].EntityID })
	// u1: -1 + 0.5*2 + 0.01*200 = 2 -> 0.881; u2's order is after at; u3 has no history.
	if len(got) != 3 || fmt.Sprintf("%.4f %s", got[0].Scores[0], got[0].Label) != "0.8808 yes" ||
		fmt.Sprintf("%.4f %s", got[1].Scores[0], got[1].Label) != "0.2689 no" || got[2].EntityID != "u3" {
		t.Errorf("predictions: %+v", got)
	}
	if err := WritePredictions(context.Background(), r, "preds", "buyer", at, got); err != nil {
		t.Fatal(err)
	}
}
