package stream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// identityLoad is a reproducible stream of a few people over several
// devices: anonymous browsing and orders on each device (keyed by the
// anonymousId, so on other partitions than the user), events as the user,
// identifies and aliases linking a device, retries of events (same messageId and key)
// and identifies with a blocked anonymousId. Each person's third device
// never logs in: an identify there carries the email only (a newsletter
// form), so that device reaches the person through traits.email alone. Every person with links has a userId, so each canonical id
// is that userId whatever order the links fold in. It returns the records
// and, per canonical id, the events that count for it; blocked is the
// number of distinct identifies with a blocked anonymousId.
func identityLoad(seed uint64, people, n int) (recs []*kgo.Record, byPerson map[string][]*event.Event, blocked int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	byPerson = map[string][]*event.Event{}
	var prev []*event.Event
	linked := map[string]bool{} // users with an identify, devices linked
	var all []*event.Event
	for i := range n {
		p := rng.IntN(people)
		user := fmt.Sprintf("u%d", p)
		dev := rng.IntN(3)
		device := fmt.Sprintf("a%d-%d", p, dev)
		email := fmt.Sprintf("p%d@shop.example", p)
		at := t0.Add(-time.Duration(rng.Int64N(int64(36 * time.Hour))))
		id := fmt.Sprintf("m%d-%d", seed, i)
		var ev *event.Event
		switch k := rng.IntN(20); {
		case k == 0 && len(prev) > 0:
			dup := *prev[rng.IntN(len(prev))]
			ev = &dup
		case k == 1:
			ev = &event.Event{Type: event.Identify, UserID: user, AnonymousID: "null", MessageID: id, Timestamp: at, ReceivedAt: at}
			blocked++
		case k < 5 && dev == 2 && linked[user]: // the email is the user's: the link ends in the user
			linked[device] = true
			ev = &event.Event{Type: event.Identify, AnonymousID: device, MessageID: id, Timestamp: at, ReceivedAt: at,
				Traits: map[string]any{"email": email}}
		case k == 4 && dev < 2: // the backend's alias call: previousId -> userId
			linked[user], linked[device] = true, true
			ev = &event.Event{Type: event.Alias, UserID: user, PreviousID: device, MessageID: id, Timestamp: at, ReceivedAt: at}
		case k < 5 && dev < 2:
			linked[user], linked[device] = true, true
			ev = &event.Event{Type: event.Identify, UserID: user, AnonymousID: device, MessageID: id, Timestamp: at, ReceivedAt: at,
				Traits: map[string]any{"country": []string{"DE", "FR"}[rng.IntN(2)], "email": email}}
		case k < 10:
			ev = order("", id, at, float64(rng.IntN(200)))
			ev.AnonymousID = device
			if rng.IntN(3) == 0 {
				ev.UserID, ev.AnonymousID = user, ""
			}
		default:
			ev = &event.Event{Type: event.Track, Event: "Product Viewed", AnonymousID: device, MessageID: id,
				Timestamp: at, ReceivedAt: at, Properties: map[string]any{"product_id": fmt.Sprintf("p%d", rng.IntN(30))}}
		}
		if ev.MessageID == id {
			all = append(all, ev)
			prev = append(prev, ev)
		}
		b, _ := ev.Marshal()
		recs = append(recs, &kgo.Record{Key: []byte(ev.EntityID()), Value: b})
	}
	// A device's events count for its person once linked; a device never
	// linked stays its own entity, with the one person of its id.
	for _, ev := range all {
		owner := ev.EntityID()
		if ev.UserID != "" || linked[owner] {
			owner = "u" + owner[1:strings.IndexByte(owner+"-", '-')]
		}
		byPerson[owner] = append(byPerson[owner], ev)
	}
	return recs, byPerson, blocked
}

// personReference is the reference of each person: every event of all its
// ids folded into one state under its userId.
func personReference(t testing.TB, e *env, byPerson map[string][]*event.Event) *reference {
	ref := newReference(t, e.cfg)
	for owner, evs := range byPerson {
		for _, ev := range evs {
			c := *ev
			c.UserID, c.AnonymousID = owner, ""
			ref.apply(&c)
		}
	}
	return ref
}

// TestIdentityMergesAcrossPartitions is the property test of the issue
// on kfake: for several seeds, people browse anonymously on devices
// whose events land on other partitions than their userId's, identify in
// random order (some through an email only), events are retried; after
// the stream and the linker settle, each person's vector under the
// userId equals the reference over all its ids' events (at three query
// times, windows sliding), every merged device's vector is empty, each
// segment change is on pulse.segments once, and every blocked identify
// is a dead letter. PULSE_IDENTITY_SEEDS=N runs N seeds instead of 4
// (every fourth with a commit interval), to search wider.
func TestIdentityMergesAcrossPartitions(t *testing.T) {
	seeds := uint64(4)
	if v, err := strconv.ParseUint(os.Getenv("PULSE_IDENTITY_SEEDS"), 10, 64); err == nil && v > 0 {
		seeds = v
	}
	for seed := range seeds {
		name, interval := fmt.Sprint("seed", seed), time.Duration(0)
		if seed%4 == 3 {
			name, interval = name+"/commit_interval", 50*time.Millisecond
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.cfg.Stream.CommitInterval = config.Duration(interval)
			if e.cfg.Kafka.Partitions < 4 {
				t.Fatalf("want 4+ partitions, have %d", e.cfg.Kafka.Partitions)
			}
			recs, byPerson, blocked := identityLoad(seed, 6, 600)
			ref := personReference(t, e, byPerson)
			half := len(recs) / 2
			e.produce(recs[:half]...)
			links0, merges0, blocked0 := counterValue(mLinks), counterValue(mMerges), counterValue(mRefusals.WithLabelValues(identity.ReasonBlocked))
			p := e.processor(Options{}, "")
			stop := e.run(p)
			e.produce(recs[half:]...)
			e.waitCaughtUp(30*time.Second, p)
			ref.waitMatches(t, e.store, e.clock.now(), 60*time.Second)
			// At later query times too: windows slide on the timers of the
			// merged states.
			for _, d := range []time.Duration{90 * time.Minute, 25 * time.Hour} {
				e.clock.set(t0.Add(d))
				ref.waitMatches(t, e.store, e.clock.now(), 30*time.Second)
			}
			checkDevicesRetired(t, e, byPerson)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			segmentChanges(t, e)
			refused := 0
			for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.Invalid) {
				if dl, err := event.DecodeDeadLetter(r.Value); err == nil && dl.Reason == event.ReasonLinkRefused && dl.Field == identity.ReasonBlocked {
					refused++
				}
			}
			if refused != blocked {
				t.Errorf("%d blocked links dead-lettered, want %d", refused, blocked)
			}
			links, linkRecords := map[string]string{}, 0
			for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.Identity) {
				if l, err := identity.DecodeLink(r.Value); err == nil && identity.IsLink(r.Key) {
					links[l.Identifier] = l.CanonicalID
					linkRecords++
				}
			}
			// The metrics: a link per record, refusals by reason, and
			// merges (each device's first link at least).
			if d := counterValue(mLinks) - links0; int(d) != linkRecords {
				t.Errorf("pulse_identity_links_total grew by %v, want %d (the link records)", d, linkRecords)
			}
			if d := counterValue(mRefusals.WithLabelValues(identity.ReasonBlocked)) - blocked0; int(d) != blocked {
				t.Errorf("pulse_identity_refusals_total{reason=blocked} grew by %v, want %d", d, blocked)
			}
			devices := 0
			for id := range links {
				if strings.HasPrefix(id, identity.KindAnonymous+":") {
					devices++
				}
			}
			if d := counterValue(mMerges) - merges0; int(d) < devices || int(d) > linkRecords {
				t.Errorf("pulse_identity_merges_total grew by %v, want %d devices linked to %d link records", d, devices, linkRecords)
			}
			for owner, evs := range byPerson {
				for _, ev := range evs {
					device := ev.AnonymousID
					if ev.Type == event.Alias {
						device = ev.PreviousID
					}
					if ev.Type != event.Identify && ev.Type != event.Alias || device == "null" {
						continue
					}
					if got := links[identity.Anonymous(device).String()]; got != owner {
						t.Errorf("identity table: %s -> %q, want %s", device, got, owner)
					}
				}
			}
		})
	}
}

// checkDevicesRetired: a device that was linked has the features of no
// events left in the store (it was merged into its person).
func checkDevicesRetired(t testing.TB, e *env, byPerson map[string][]*event.Event) {
	t.Helper()
	linked := map[string]bool{}
	for _, evs := range byPerson {
		for _, ev := range evs {
			if ev.Type == event.Identify && ev.AnonymousID != "" && ev.AnonymousID != "null" {
				linked[ev.AnonymousID] = true
			}
		}
	}
	var ids []string
	for id := range linked {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	ref := newReference(t, e.cfg)
	ref.st["-"] = ref.set.NewState()
	empty, _ := ref.vector("-", e.clock.now())
	// A device's retired vector is written by its own task after its
	// transaction, and its person's merged vector by the person's task
	// after a later one: the person can be in the store first, so wait.
	var wrong []string
	start := time.Now()
	for deadline := start.Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		wrong = wrong[:0]
		for _, id := range ids {
			v, err := e.store.Get(context.Background(), entity, id)
			if err == nil && v.CanonicalID == "" {
				wrong = append(wrong, fmt.Sprintf("device %s was merged but its vector names no canonical id", id))
			}
			if err == nil && (!reflect.DeepEqual(v.Features, empty) || len(v.Segments) > 0) {
				wrong = append(wrong, fmt.Sprintf("device %s was merged but still has features %v", id, v.Features))
			}
		}
		if len(wrong) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Logf("the devices' vectors were retired %v after their persons matched", d.Round(time.Millisecond))
	}
	for _, w := range wrong {
		t.Error(w)
	}
}

// Two processors share the group on a real Kafka broker; one is killed in
// the middle of a merge (after a resolved-topic transaction committed,
// before its Pebble batch: the survivor restores the pointer and the
// resolved offset from the changelog) or while it runs the linker. The
// survivor ends with every person's vector equal to the reference over
// all its ids' events, each segment change written once.
func TestIdentityKillMidMergeRealKafka(t *testing.T) {
	t.Parallel() // waits on brokers and processes more than it computes
	// With early store writes the kill comes between a transaction's
	// store write and its Kafka commit: the store shows what the replay
	// must write again.
	for _, c := range []struct {
		mode, point string
		interval    time.Duration
	}{
		{config.StoreWriteCommitted, "after-txn-commit", 0},
		{config.StoreWriteEarly, "before-txn-commit", 0},
		{config.StoreWriteEarly, "before-txn-commit", 100 * time.Millisecond},
	} {
		name := c.mode
		if c.interval > 0 {
			name += "/commit_interval"
		}
		t.Run(name, func(t *testing.T) { identityKillMidMerge(t, c.mode, c.point, c.interval) })
	}
}

func identityKillMidMerge(t *testing.T, storeWrite, killPoint string, interval time.Duration) {
	e := newEnv(t, testenv.Kafka(t))
	e.cfg.Stream.StoreWrite = storeWrite
	e.cfg.Stream.CommitInterval = config.Duration(interval)
	recs, byPerson, _ := identityLoad(11, 8, 1500)
	ref := personReference(t, e, byPerson)
	var resolvedCommits, linkerCommits atomic.Int64
	var armed, killed atomic.Bool
	var killedAt atomic.Value
	kill := func(point string) error {
		if killed.CompareAndSwap(false, true) {
			killedAt.Store(point)
		}
		return errKill
	}
	hook := func(point string, _ int32) error {
		switch point {
		case "resolved-before-commit":
			if resolvedCommits.Add(1) >= 3 {
				armed.Store(true)
			}
		case "linker-after-commit":
			if linkerCommits.Add(1) >= 6 {
				return kill("the linker's commit")
			}
		case killPoint:
			if armed.Load() {
				return kill(killPoint + " after a merge")
			}
		}
		return nil
	}
	a := e.processor(Options{hook: hook, MaxPollRecords: 100}, filepath.Join(t.TempDir(), "a"))
	b := e.processor(Options{MaxPollRecords: 100}, filepath.Join(t.TempDir(), "b"))
	// a stops by itself once killed (the kill cancels its Run); a stop
	// from here could come before its workers reported the kill.
	deadA := runUntilDead(t, a)
	e.run(b)
	deadline := time.Now().Add(60 * time.Second)
	for len(a.Partitions()) == 0 || len(b.Partitions()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("partitions not shared: a %v, b %v", a.Partitions(), b.Partitions())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("a owns %v, b owns %v", a.Partitions(), b.Partitions())
	for i := 0; i < len(recs); i += 100 {
		e.produce(recs[i:min(i+100, len(recs))]...)
		time.Sleep(20 * time.Millisecond)
	}
	deadline = time.Now().Add(120 * time.Second)
	for !killed.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := waitDead(deadA, 60*time.Second); !errors.Is(err, errKill) {
		t.Fatalf("processor a ended with %v (resolved commits %d, linker commits %d), want the injected kill",
			err, resolvedCommits.Load(), linkerCommits.Load())
	}
	t.Logf("a killed after %v: %d resolved and %d linker commits", killedAt.Load(), resolvedCommits.Load(), linkerCommits.Load())
	e.waitCaughtUp(90*time.Second, b)
	ref.waitMatches(t, e.store, e.clock.now(), 60*time.Second)
	checkDevicesRetired(t, e, byPerson)
	ref.checkMembers(t, e.store, e.cfg.Segments, e.clock.now())
	final := segmentChanges(t, e)
	for id := range ref.st {
		_, want := ref.vector(id, e.clock.now())
		if !equal(final[id], want...) {
			t.Errorf("entity %s: segments from the topic %v, want %v", id, final[id], want)
		}
	}
}

// Two real `pulse stream` processes, identity on, share the group and a
// Redis online store; one is killed with SIGKILL once the linker has
// written links (merges in flight) and started again for the rest:
// every person's vector equals the reference over all its ids' events,
// and every segment change is on pulse.segments once.
func TestIdentitySIGKILLPulseStream(t *testing.T) {
	t.Parallel() // waits on brokers and processes more than it computes
	e := newEnv(t, testenv.Kafka(t))
	redisAddr, redisDB := testenv.RedisDB(t)
	prefix := testenv.RedisKeyPrefix(t)
	dir := t.TempDir()
	bin := testenv.BuildPulse(t)
	tp := e.cfg.Kafka.Topics
	writeConfig := func(name string) string {
		yaml := fmt.Sprintf(`data_dir: %s
kafka:
  brokers: [%q]
  topics: {events: %s, invalid: %s, segments: %s, state: %s, predictions: %s, seeds: %s, activations: %s,
           identity: %s, identity_requests: %s, resolved: %s}
store: {backend: redis}
redis: {addr: %q, db: %d, key_prefix: %q}
%s
`, filepath.Join(dir, name), e.brokers[0], tp.Events, tp.Invalid, tp.Segments, tp.State, tp.Events+".predictions", tp.Seeds, tp.Activations,
			tp.Identity, tp.IdentityRequests, tp.Resolved, redisAddr, redisDB, prefix, testConfig[len("\n"):])
		yaml = replaceOnce(yaml, "stream:\n", fmt.Sprintf("stream:\n  group: %s\n  listen: %q\n", e.cfg.Stream.Group, testenv.FreeAddr(t)))
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	logf, err := os.Create(filepath.Join(dir, "pulse.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("pulse stream logs:\n%s", b)
		}
	}()
	start := func(cfgFile string) *exec.Cmd {
		cmd := exec.Command(bin, "stream", "-config", cfgFile)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	cfgA, cfgB := writeConfig("a"), writeConfig("b")
	recs, byPerson, _ := identityLoad(21, 8, 3000)
	ref := personReference(t, e, byPerson)
	a, b := start(cfgA), start(cfgB)
	half := len(recs) / 2
	for i := 0; i < half; i += 200 {
		e.produce(recs[i:min(i+200, half)]...)
		time.Sleep(20 * time.Millisecond)
	}
	e.waitGroupProgress(t, 60*time.Second, 1)
	// Kill once the linker has written links (merges are then in flight).
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ends, err := kadm.NewClient(e.prod).ListEndOffsets(context.Background(), tp.Identity)
		var n int64
		ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
		if err == nil && n > int64(2*e.cfg.Kafka.Partitions)+2 { // past the fences and their markers
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the linker wrote no links (end offsets %d, err %v)", n, err)
		}
	}
	if err := a.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	a.Wait()
	e.produce(recs[half:]...)
	a = start(cfgA)
	e.waitGroupProgress(t, 90*time.Second, -1)
	store, err := featurestore.OpenRedis(configRedis(redisAddr, redisDB, prefix), featurestore.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var mismatch string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if mismatch = storeMismatch(store, ref, now); mismatch == "" {
			break
		}
	}
	if mismatch != "" {
		store.Close()
		t.Fatal(mismatch)
	}
	ref.checkMembers(t, store, e.cfg.Segments, now)
	store.Close()
	for _, cmd := range []*exec.Cmd{a, b} {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("pulse stream after SIGTERM: %v", err)
		}
	}
	final := segmentChanges(t, e)
	for id := range ref.st {
		_, want := ref.vector(id, now)
		if !equal(final[id], want...) {
			t.Errorf("entity %s: segments from the topic %v, want %v", id, final[id], want)
		}
	}
}

// storeMismatch says the first entity whose vector in store differs from
// the reference, or "".
func storeMismatch(store featurestore.Store, ref *reference, now time.Time) string {
	for id := range ref.st {
		want, wantSegs := ref.vector(id, now)
		v, err := store.Get(context.Background(), entity, id)
		if err != nil || !reflect.DeepEqual(v.Features, want) || !reflect.DeepEqual(v.Segments, wantSegs) && len(v.Segments)+len(wantSegs) > 0 {
			return fmt.Sprintf("entity %s (err %v):\n got %v %v\nwant %v %v", id, err, v.Features, v.Segments, want, wantSegs)
		}
	}
	return ""
}

func configRedis(addr string, db int, prefix string) config.Redis {
	return config.Redis{Addr: addr, DB: db, KeyPrefix: prefix}
}
