package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/backfill"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
)

// newFeatures are added to testConfig while the stream runs: every agg,
// lifetime and windowed.
const newFeatures = `  - name: revenue_lifetime
    agg: sum
    event: Order Completed
    field: properties.revenue
  - name: avg_order_7d
    agg: avg
    event: Order Completed
    field: properties.revenue
    window: 7d
  - name: min_order
    agg: min
    event: Order Completed
    field: properties.revenue
  - name: orders_6h
    agg: count
    event: Order Completed
    window: 6h
  - name: products_ever
    agg: distinct
    event: Product Viewed
    field: properties.product_id
  - name: first_country
    agg: first
    field: traits.country
  - name: last_products
    agg: last_n
    event: Product Viewed
    field: properties.product_id
    n: 5
`

// testConfig2 is testConfig with newFeatures.
var testConfig2 = strings.Replace(testConfig, "segments:\n", newFeatures+"segments:\n", 1)

// newHistoryEnv is an env on the real Kafka broker with the real ClickHouse
// server, in a database of the test's own.
func newHistoryEnv(t *testing.T) *env {
	e := newEnv(t, testenv.Kafka(t))
	native, _ := testenv.ClickHouse(t)
	e.cfg.ClickHouse.Addr, e.cfg.ClickHouse.Database = native, testenv.ClickHouseDatabase(t)
	return e
}

// withNewFeatures is cfg changed to testConfig2: the same Kafka, ClickHouse,
// data directory and consumer group.
func withNewFeatures(t testing.TB, cfg *config.Config) *config.Config {
	t.Helper()
	cfg2, err := config.Parse([]byte(testConfig2), "test2.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg2.Kafka, cfg2.ClickHouse, cfg2.DataDir, cfg2.Stream.Group = cfg.Kafka, cfg.ClickHouse, cfg.DataDir, cfg.Stream.Group
	return cfg2
}

// TestSeedsMakeNewFeaturesExact is the whole story of adding a feature to
// a running system, against real Kafka and ClickHouse: the stream and the
// history writer run config C1; events; the stream restarts with C2 (new
// features); events (some retries of earlier ones); backfill seeds; the
// stream is killed before and after committing the seeds; events again.
// Every user's vector then equals a computation from scratch over all the
// events, for the old features and the new. A second backfill changes
// nothing, and neither does a third after the partitions move to a
// processor with no local state.
func TestSeedsMakeNewFeaturesExact(t *testing.T) {
	e := newHistoryEnv(t)
	e.cfg.Kafka.Topics.Predictions = e.cfg.Kafka.Topics.Events + ".predictions"
	histGroup := e.cfg.Stream.Group + ".history"
	cfg2 := withNewFeatures(t, e.cfg)
	ctx := context.Background()

	reader := startHistory(t, e, histGroup)

	ref := newReference(t, cfg2)
	// With retries of phase-one events in phases two and three: duplicates
	// straddling the activation, which the stream must count once for the
	// new features.
	phases := phasedLoad(t, ref, 21, 40, 40, 3000, 3000, 2000)
	recs1, recs2, recs3 := phases[0], phases[1], phases[2]

	// C1.
	p1 := e.processor(Options{MaxPollRecords: 500}, "")
	stop := e.run(p1)
	e.produce(recs1...)
	e.waitCaughtUp(60*time.Second, p1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	activation := e.endOffsets()

	// C2, killed when it is about to commit the seeds.
	e.cfg = cfg2
	kill := newSeedKiller("seeds-before-commit")
	p2 := e.processor(Options{MaxPollRecords: 500, hook: kill.hook}, "")
	dead := runUntilDead(t, p2)
	e.produce(recs2...)
	e.waitCaughtUp(60*time.Second, p2)
	if got := p2.activations(); !sameActivations(got, activation, cfg2) {
		t.Fatalf("activations %v, want every new feature at %v", got, activation)
	}
	waitHistory(t, e, histGroup)
	rep, err := backfill.Seeds(ctx, cfg2, reader, backfill.SeedsOptions{HistoryGroup: histGroup})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Seeds == 0 || len(rep.Features) != 7 {
		t.Fatalf("seeds report %+v: want seeds for the 7 new features", rep)
	}
	if err := waitDead(dead, 30*time.Second); !errors.Is(err, errKill) {
		t.Fatalf("stream with the kill hook: %v", err)
	}

	// Killed again, after the seeds' transaction committed and before
	// Pebble has them: the restart catches up from the changelog.
	kill = newSeedKiller("after-txn-commit")
	p3 := e.processor(Options{MaxPollRecords: 500, hook: kill.hook}, "")
	if err := waitDead(runUntilDead(t, p3), 30*time.Second); !errors.Is(err, errKill) {
		t.Fatalf("stream with the kill hook: %v", err)
	}
	p4 := e.processor(Options{MaxPollRecords: 500}, "")
	stop = e.run(p4)
	e.produce(recs3...)
	e.waitCaughtUp(60*time.Second, p4)
	e.waitSeedsRead(t, 30*time.Second, p4)
	now := e.clock.now()
	ref.waitMatches(t, e.store, now, 30*time.Second)

	// Backfill again: the stream recognises every seed as applied.
	rep2, err := backfill.Seeds(ctx, cfg2, reader, backfill.SeedsOptions{HistoryGroup: histGroup})
	if err != nil {
		t.Fatal(err)
	}
	if rep2.Seeds != rep.Seeds {
		t.Errorf("second run sent %d seeds, the first %d", rep2.Seeds, rep.Seeds)
	}
	e.waitSeedsRead(t, 30*time.Second, p4)
	ref.check(t, e.store, now)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// The partitions move to a processor with no local state: it restores
	// the activations, marks and seeds offset from the changelog.
	p5 := e.processor(Options{MaxPollRecords: 500}, filepath.Join(t.TempDir(), "moved"))
	e.run(p5) // stopped by the env's cleanup
	e.produce(phasedLoad(t, ref, 24, 40, 0, 500)[0]...)
	e.waitCaughtUp(60*time.Second, p5)
	if got := p5.activations(); !sameActivations(got, activation, cfg2) {
		t.Fatalf("restored activations %v, want every new feature at %v", got, activation)
	}
	waitHistory(t, e, histGroup)
	if _, err := backfill.Seeds(ctx, cfg2, reader, backfill.SeedsOptions{HistoryGroup: histGroup}); err != nil {
		t.Fatal(err)
	}
	e.waitSeedsRead(t, 30*time.Second, p5)
	ref.waitMatches(t, e.store, now, 30*time.Second)
}

// TestSeedsRefusedUntilActivatedAndHistoryCaughtUp: backfill says what to
// do rather than seeding at a wrong cut.
func TestSeedsRefusedUntilActivatedAndHistoryCaughtUp(t *testing.T) {
	e := newHistoryEnv(t)
	conn, err := history.Open(e.cfg.ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := history.Migrate(context.Background(), conn, e.cfg.ClickHouse.Database); err != nil {
		t.Fatal(err)
	}
	reader := history.NewReader(conn, e.cfg.ClickHouse.Database)
	_, err = backfill.Seeds(context.Background(), e.cfg, reader, backfill.SeedsOptions{HistoryGroup: "nobody"})
	if !errors.Is(err, backfill.ErrNotActivated) {
		t.Fatalf("no stream ever ran: %v, want ErrNotActivated", err)
	}
	recs, _ := load(31, 10, 300)
	p := e.processor(Options{}, "")
	stop := e.run(p)
	e.produce(recs...)
	e.waitCaughtUp(60*time.Second, p)
	stop()
	cfg2 := withNewFeatures(t, e.cfg)
	e.cfg = cfg2
	p = e.processor(Options{}, "")
	stop = e.run(p)
	defer stop()
	deadline := time.Now().Add(90 * time.Second)
	for len(p.activations()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// No history writer runs: ClickHouse holds none of the events before
	// the activation. Every partition activates on its own time, so wait
	// until backfill no longer finds one that has not (a busy machine can
	// take a while).
	for {
		_, err = backfill.Seeds(context.Background(), cfg2, reader, backfill.SeedsOptions{HistoryGroup: "nobody"})
		if !errors.Is(err, backfill.ErrNotActivated) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !errors.Is(err, backfill.ErrHistoryBehind) {
		t.Fatalf("history writer never ran: %v, want ErrHistoryBehind", err)
	}
}

// seedKiller kills the processor once at point, the first time it is
// reached while a task commits seeds.
type seedKiller struct {
	mu    sync.Mutex
	point string
	in    map[int32]bool
	done  bool
}

func newSeedKiller(point string) *seedKiller { return &seedKiller{point: point, in: map[int32]bool{}} }

func (k *seedKiller) hook(point string, part int32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if point == "seeds-before-commit" {
		k.in[part] = true
	}
	if !k.done && k.in[part] && point == k.point {
		k.done = true
		return errKill
	}
	if point == "after-pebble-commit" { // a commit's last step
		k.in[part] = false
	}
	return nil
}

// runUntilDead runs p until it stops by itself (a kill hook) or the test ends.
func runUntilDead(t *testing.T, p *Processor) <-chan error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(cancel)
	return done
}

func waitDead(done <-chan error, timeout time.Duration) error {
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return errors.New("still running")
	}
}

// activations are the tasks' activation offsets by partition.
func (p *Processor) activations() map[int32]map[uint64]int64 {
	p.mu.Lock()
	tasks := map[int32]*task{}
	for part, t := range p.tasks {
		if !t.failed {
			tasks[part] = t
		}
	}
	p.mu.Unlock()
	out := map[int32]map[uint64]int64{}
	for part, t := range tasks {
		t.work.Lock()
		out[part] = map[uint64]int64{}
		for fp, o := range t.act {
			out[part][fp] = o
		}
		t.work.Unlock()
	}
	return out
}

// sameActivations: C1's features at 0, the new ones at the end offsets
// C1 left, on every partition.
func sameActivations(got map[int32]map[uint64]int64, ends map[int32]int64, cfg *config.Config) bool {
	ref, err := New(cfg, nil, Options{})
	if err != nil {
		return false
	}
	old := map[string]bool{}
	c1, _ := config.Parse([]byte(testConfig), "test.yaml")
	for _, f := range c1.Features {
		old[f.Name] = true
	}
	if len(got) != len(ends) {
		return false
	}
	for part, end := range ends {
		for i, n := range ref.features.Names() {
			fp, _ := ref.features.Fingerprint(i)
			want := int64(0)
			if !old[n] {
				want = end
			}
			if o, ok := got[part][fp]; !ok || o != want {
				return false
			}
		}
	}
	return true
}

// waitSeedsRead waits until the tasks read their seeds partitions to the end.
func (e *env) waitSeedsRead(t *testing.T, timeout time.Duration, p *Processor) {
	t.Helper()
	ends, err := kadm.NewClient(e.prod).ListEndOffsets(context.Background(), e.cfg.Kafka.Topics.Seeds)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		done := true
		p.mu.Lock()
		tasks := len(p.tasks)
		ends.Each(func(o kadm.ListedOffset) {
			tk := p.tasks[o.Partition]
			if tk == nil || tk.failed {
				done = false
				return
			}
			tk.mu.Lock()
			if tk.meta.seedNext < o.Offset {
				done = false
			}
			tk.mu.Unlock()
		})
		p.mu.Unlock()
		if done && tasks > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("seeds not read to their end %v in %s", ends, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitHistory waits until the history writer committed the end of every
// events partition.
func waitHistory(t *testing.T, e *env, group string) {
	t.Helper()
	adm := kadm.NewClient(e.prod)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ends := e.endOffsets()
		resp, err := adm.FetchOffsets(context.Background(), group)
		done := err == nil
		for p, end := range ends {
			if o, ok := resp.Lookup(e.cfg.Kafka.Topics.Events, p); !ok || o.At < end {
				done = false
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("history writer did not catch up (err %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSIGKILLAroundSeeds: a real `pulse stream` process, its config
// changed to add features, is killed with SIGKILL right after backfill sent
// its seeds and again soon after the restart, at whatever it was doing
// (applying seeds, restoring, committing). After more events, every user's
// vector in Redis equals the computation from scratch over all events.
func TestSIGKILLAroundSeeds(t *testing.T) {
	t.Parallel() // waits on brokers and processes more than it computes
	e := newHistoryEnv(t)
	e.cfg.Kafka.Topics.Predictions = e.cfg.Kafka.Topics.Events + ".predictions"
	redisAddr := testenv.Redis(t)
	keyPrefix := testenv.RedisKeyPrefix(t)
	histGroup := e.cfg.Stream.Group + ".history"
	dir := t.TempDir()
	bin := testenv.BuildPulse(t)
	listen := testenv.FreeAddr(t)
	tp := e.cfg.Kafka.Topics
	cfgFile := filepath.Join(dir, "pulse.yaml")
	writeConfig := func(features string) {
		yaml := fmt.Sprintf(`data_dir: %s
kafka:
  brokers: [%q]
  topics: {events: %s, invalid: %s, segments: %s, state: %s, predictions: %s, seeds: %s, activations: %s}
store: {backend: redis}
redis: {addr: %q, key_prefix: %q}
%s
`, filepath.Join(dir, "data"), e.brokers[0], tp.Events, tp.Invalid, tp.Segments, tp.State, tp.Predictions, tp.Seeds, tp.Activations,
			redisAddr, keyPrefix, features[len("\n"):])
		yaml = replaceOnce(yaml, "stream:\n", fmt.Sprintf("stream:\n  group: %s\n  listen: %q\n", e.cfg.Stream.Group, listen))
		if err := os.WriteFile(cfgFile, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logf, err := os.Create(filepath.Join(dir, "pulse.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		b, _ := os.ReadFile(logf.Name())
		if t.Failed() {
			t.Logf("pulse stream log:\n%s", b)
		} else if testing.Verbose() { // where the kills fell
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "seeds merged") || strings.Contains(l, "restored from changelog") || strings.Contains(l, "stream processor started") {
					t.Log(l)
				}
			}
		}
	}()
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "stream", "-config", cfgFile)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	reader := startHistory(t, e, histGroup)

	cfg2 := withNewFeatures(t, e.cfg)
	ref := newReference(t, cfg2)
	phases := phasedLoad(t, ref, 41, 50, 50, 4000, 3000, 2000)
	recs1, recs2, recs3 := phases[0], phases[1], phases[2]

	writeConfig(testConfig)
	cmd := start()
	e.produce(recs1...)
	e.waitGroupProgress(t, 90*time.Second, -1)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pulse stream after SIGTERM: %v", err)
	}

	writeConfig(testConfig2)
	cmd = start()
	e.produce(recs2...)
	e.waitGroupProgress(t, 90*time.Second, -1)
	waitHistory(t, e, histGroup)
	rep, err := backfill.Seeds(context.Background(), cfg2, reader, backfill.SeedsOptions{HistoryGroup: histGroup})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Seeds == 0 {
		t.Fatalf("no seeds: %+v", rep)
	}
	time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	cmd = start()
	time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	cmd = start()
	e.produce(recs3...)
	e.waitGroupProgress(t, 90*time.Second, -1)

	scfg := &config.Config{}
	scfg.Store.Backend = "redis"
	scfg.Redis.Addr, scfg.Redis.KeyPrefix = redisAddr, keyPrefix
	store, err := featurestore.Open(scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		now := time.Now()
		var bad []string
		for id := range ref.st {
			want, _ := ref.vector(id, now)
			v, err := store.Get(context.Background(), entity, id)
			if err != nil || !reflect.DeepEqual(v.Features, want) {
				bad = append(bad, fmt.Sprintf("user %s (err %v):\n got %v\nwant %v", id, err, v.Features, want))
			}
		}
		if len(bad) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d users differ, e.g. %s", len(bad), bad[0])
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("pulse stream after SIGTERM: %v", err)
	}
}

// TestSeedsFillWhatRetentionDeleted: a stream starting fresh on a log whose
// first events retention already deleted activates its features at the
// log's start, and backfill seeds the deleted events from history.
func TestSeedsFillWhatRetentionDeleted(t *testing.T) {
	e := newHistoryEnv(t)
	e.cfg.Kafka.Topics.Predictions = e.cfg.Kafka.Topics.Events + ".predictions"
	histGroup := e.cfg.Stream.Group + ".history"
	reader := startHistory(t, e, histGroup)

	ref := newReference(t, e.cfg)
	phases := phasedLoad(t, ref, 51, 30, 0, 2000, 1000)
	recs1, recs2 := phases[0], phases[1]
	e.produce(recs1...)
	waitHistory(t, e, histGroup)
	// Retention: the first events are gone from Kafka, not from history.
	ends := e.endOffsets()
	del := kadm.Offsets{}
	for p, end := range ends {
		del.AddOffset(e.cfg.Kafka.Topics.Events, p, end, -1)
	}
	resp, err := kadm.NewClient(e.prod).DeleteRecords(context.Background(), del)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	p := e.processor(Options{}, "")
	stop := e.run(p)
	defer stop()
	e.produce(recs2...)
	e.waitCaughtUp(60*time.Second, p)
	for part, acts := range p.activations() {
		for _, o := range acts {
			if o != ends[part] {
				t.Fatalf("partition %d activated at %d, want the log start %d", part, o, ends[part])
			}
		}
	}
	waitHistory(t, e, histGroup)
	rep, err := backfill.Seeds(context.Background(), e.cfg, reader, backfill.SeedsOptions{HistoryGroup: histGroup})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Seeds == 0 || len(rep.Features) != len(e.cfg.Features) {
		t.Fatalf("seeds report %+v: want every feature seeded", rep)
	}
	e.waitSeedsRead(t, 30*time.Second, p)
	ref.waitMatches(t, e.store, e.clock.now(), 30*time.Second)
}

// startHistory runs a history writer (consumer group group) over e's
// topics into e's ClickHouse database until the test ends, and returns a
// reader of that database.
func startHistory(t *testing.T, e *env, group string) *history.Reader {
	t.Helper()
	w, err := history.NewWriter(e.cfg, history.WriterOptions{Group: group, FlushInterval: 50 * time.Millisecond},
		slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	conn, err := history.Open(e.cfg.ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return history.NewReader(conn, e.cfg.ClickHouse.Database)
}
