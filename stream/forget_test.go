package stream

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/deletion"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
)

// forgetRequest writes a deletion request (what the profile API's DELETE
// writes) for subject to the link requests topic.
func (e *env) forgetRequest(subject identity.Identifier, id string, suppress ...bool) {
	e.t.Helper()
	q := identity.Forget(subject, e.clock.now(), id)
	q.Suppress = len(suppress) > 0 && suppress[0]
	v, err := identity.EncodeRequest(q)
	if err != nil {
		e.t.Fatal(err)
	}
	r := &kgo.Record{Topic: e.cfg.Kafka.Topics.IdentityRequests, Key: []byte(subject.Value), Value: v}
	if err := e.prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

// deletionProgress folds the deletions topic (the stream's share: no
// history) and checks that no part of a deletion is recorded twice.
func deletionProgress(t *testing.T, e *env) *deletion.Table {
	t.Helper()
	tab := deletion.NewTable()
	seen := map[string]bool{}
	for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.Deletions) {
		rec, err := deletion.Decode(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if k := string(r.Key); seen[k] || k != string(rec.Key()) {
			t.Errorf("deletion record %s under key %s: twice, or under another key", r.Value, k)
		}
		seen[string(r.Key)] = true
		tab.Add(rec)
	}
	return tab
}

// checkDeleted checks that deletion id is done in the stream, with the
// person's counts.
func checkDeleted(t *testing.T, tab *deletion.Table, id string, identifiers, entities int, suppressed bool) {
	t.Helper()
	s, ok := tab.Status(id, false)
	if !ok || s.State != deletion.StateDone || s.Identifiers != identifiers || s.Entities != entities || s.Stream.PartsDone != entities ||
		s.Suppressed != suppressed || s.Kind != identity.KindUser || s.RequestedAt.IsZero() {
		t.Errorf("deletion %s: %+v (found %v), want done with %d identifiers and %d entities, suppressed %v", id, s, ok, identifiers, entities, suppressed)
	}
}

// waitVectors waits until the store holds a vector for each of present
// and none for each of absent.
func waitVectors(t *testing.T, e *env, timeout time.Duration, present, absent []string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		snap := e.store.snapshot()
		var wrong []string
		for _, id := range present {
			if _, ok := snap["user/"+id]; !ok {
				wrong = append(wrong, id+" missing")
			}
		}
		for _, id := range absent {
			if _, ok := snap["user/"+id]; ok {
				wrong = append(wrong, id+" still there")
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("store after %s: %v", timeout, wrong)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestForgetPerson: a deletion request naming any id of a person deletes
// every entity of it (the canonical one with its state, the merged
// devices with their pointers), exits its segments once with the reason
// deleted, tombstones its links; other people stay; a restart, from the
// local state or from the changelog alone, brings nothing back; and the
// ids' later events count for a new person, from nothing.
func TestForgetPerson(t *testing.T) {
	e := newEnv(t, nil)
	p := e.processor(Options{}, "")
	stop := e.run(p)
	at := t0.Add(-10 * time.Minute)
	view := func(anon, user, msg, product string) *event.Event {
		return &event.Event{Type: event.Track, Event: "Product Viewed", AnonymousID: anon, UserID: user, MessageID: msg,
			Timestamp: at, ReceivedAt: at, Properties: map[string]any{"product_id": product}}
	}
	identify := func(anon, user, msg, email string) *event.Event {
		return &event.Event{Type: event.Identify, AnonymousID: anon, UserID: user, MessageID: msg,
			Timestamp: at, ReceivedAt: at, Traits: map[string]any{"email": email}}
	}
	evs := []*event.Event{
		view("dev-a", "", "v1", "p1"), view("dev-b", "", "v2", "p2"),
		identify("dev-a", "pu", "i1", "pu@example.com"), identify("dev-b", "pu", "i2", "pu@example.com"),
		view("dev-a", "", "v3", "p3"), // after the link: forwarded to pu
	}
	for i := range 3 {
		evs = append(evs, order("pu", fmt.Sprint("o-pu-", i), at, 50), order("qu", fmt.Sprint("o-qu-", i), at, 70))
	}
	evs = append(evs, order("lone", "o-lone", at, 10))
	for _, ev := range evs {
		e.produce(eventRecord(t, ev))
	}
	e.waitCaughtUp(30*time.Second, p)
	waitFeature(t, e, "pu", "orders_lifetime", 3.0, 30*time.Second)
	waitFeature(t, e, "pu", "products_24h", 3.0, 30*time.Second) // dev-a's and dev-b's browsing merged in
	waitFeature(t, e, "qu", "orders_lifetime", 3.0, 30*time.Second)

	forgotten0 := counterValue(mForgotten)
	e.forgetRequest(identity.User("dev-b"), "del-1")      // a device's id, as the API sends it: tried as an anonymousId
	e.forgetRequest(identity.User("lone"), "del-2", true) // never linked; suppressed too
	waitVectors(t, e, 30*time.Second, []string{"qu"}, []string{"pu", "dev-a", "dev-b", "lone"})
	if d := counterValue(mForgotten) - forgotten0; d != 2 {
		t.Errorf("pulse_identity_forgotten_total grew by %v, want 2", d)
	}
	for _, seg := range []string{"buyers", "hot", "odd_orders"} {
		ids, _, _ := e.store.SegmentMembers(context.Background(), "user", seg, "", 100)
		for _, id := range ids {
			if id == "pu" || id == "lone" {
				t.Errorf("segment %s still lists %s", seg, id)
			}
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Each segment change once, in order, and the deleted ones out, with
	// the reason on their exits.
	final := segmentChanges(t, e)
	if len(final["pu"]) > 0 || len(final["lone"]) > 0 || len(final["qu"]) == 0 {
		t.Errorf("memberships after the deletion: pu %v, lone %v, qu %v", final["pu"], final["lone"], final["qu"])
	}
	deletedExits := 0
	for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.Segments) {
		var rec segment.Record
		if err := json.Unmarshal(r.Value, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Reason == segment.ReasonDeleted {
			deletedExits++
			if rec.Change != segment.ChangeExit || (rec.EntityID != "pu" && rec.EntityID != "lone") {
				t.Errorf("a deletion's record: %+v", rec)
			}
		}
	}
	if deletedExits == 0 {
		t.Error("no exit with reason deleted")
	}
	// The identity table: every identifier of the person tombstoned last,
	// each tombstone naming its part of the deletion for the history.
	latest := map[string][]byte{}
	parts := map[string]string{}
	for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.Identity) {
		if identity.IsLink(r.Key) {
			latest[string(r.Key)] = r.Value
			for _, h := range r.Headers {
				if h.Key == deletion.Header {
					parts[string(h.Value)] = string(r.Key)
				}
			}
		}
	}
	for _, k := range []string{"user_id:pu", "anonymous_id:dev-a", "anonymous_id:dev-b", "email:pu@example.com", "user_id:lone"} {
		if v, ok := latest[k]; !ok || v != nil {
			t.Errorf("identity table: %s last holds %q (present %v), want a tombstone", k, v, ok)
		}
	}
	if len(parts) != 5 || parts["del-2/0"] != "user_id:lone" || parts["del-1/0"] == "" || parts["del-1/3"] == "" {
		t.Errorf("tombstones' deletion parts: %v, want del-1/0 to del-1/3 and del-2/0", parts)
	}
	// The deletions' progress: both done in the stream, each part once.
	tab := deletionProgress(t, e)
	checkDeleted(t, tab, "del-1", 4, 3, false)
	checkDeleted(t, tab, "del-2", 1, 1, true)

	// The suppressed deletion's entity id is on the suppressions topic (for
	// ingest), the other's ids are not.
	suppressed := map[string]bool{}
	for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.Suppressions) {
		suppressed[string(r.Key)] = r.Value != nil
	}
	if !suppressed["lone"] || len(suppressed) != 1 {
		t.Errorf("suppressions topic: %v, want lone alone", suppressed)
	}

	// Restarts bring nothing back: on the same local state, then on a new
	// data directory restored from the changelog and the identity topic.
	for _, dir := range []string{e.cfg.DataDir, t.TempDir()} {
		p := e.processor(Options{}, dir)
		stop := e.run(p)
		e.waitCaughtUp(30*time.Second, p)
		time.Sleep(200 * time.Millisecond) // the timers' and re-writes' turn
		waitVectors(t, e, time.Second, []string{"qu"}, []string{"pu", "dev-a", "dev-b", "lone"})
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}

	// Events received before the deletion but applied after it (a
	// backlog) are dropped, their link requests too: nothing of the
	// person comes back. On a new data directory: the deletions' markers
	// come back from the changelog.
	p = e.processor(Options{}, t.TempDir())
	stop = e.run(p)
	deleted0 := counterValue(mEvents.WithLabelValues("deleted"))
	links0 := counterValue(mLinks)
	e.produce(eventRecord(t, view("dev-a", "", "v8", "p8")))
	e.produce(eventRecord(t, identify("dev-b", "pu", "i8", "pu@example.com")))
	e.produce(eventRecord(t, order("pu", "o-pu-8", at, 5)))
	e.produce(eventRecord(t, order("lone", "o-lone-8", at, 5)))
	e.waitCaughtUp(30*time.Second, p)
	time.Sleep(200 * time.Millisecond)
	waitVectors(t, e, time.Second, []string{"qu"}, []string{"pu", "dev-a", "dev-b", "lone"})
	if d := counterValue(mEvents.WithLabelValues("deleted")) - deleted0; d != 4 {
		t.Errorf("pulse_stream_events_total{result=deleted} grew by %v, want 4", d)
	}
	if d := counterValue(mLinks) - links0; d != 0 {
		t.Errorf("a dropped identify linked %v identifiers again", d)
	}

	// Events received after it: a new person, from nothing.
	later := t0.Add(time.Minute)
	e.clock.set(later.Add(time.Minute))
	for _, ev := range []*event.Event{view("dev-a", "", "v9", "p9"), identify("dev-a", "pu", "i9", "pu@example.com"), order("pu", "o-pu-9", at, 5)} {
		ev.ReceivedAt = later
		e.produce(eventRecord(t, ev))
	}
	e.waitCaughtUp(30*time.Second, p)
	waitFeature(t, e, "pu", "orders_lifetime", 1.0, 30*time.Second)
	waitFeature(t, e, "pu", "products_24h", 1.0, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// waitFeature waits until user id's feature holds want.
func waitFeature(t *testing.T, e *env, id, feature string, want any, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, ok := e.store.snapshot()["user/"+id]
		if ok && v.Features[feature] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("user %s: %s = %v (vector found %v), want %v", id, feature, v.Features[feature], ok, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestForgetKilledMidDeletion: on a real Kafka broker, the processor that
// carries deletions out is killed at a point of its first commit after
// they were requested (the linker's before its commit; a task's before
// its Kafka commit, and after it, before the store write) and another
// takes over on the same local state: every entity of the deleted people
// ends deleted, their exits are on pulse.segments once each, and the
// others keep their features.
func TestForgetKilledMidDeletion(t *testing.T) {
	brokers := testenv.Kafka(t)
	for _, point := range []string{"linker-before-commit", "before-txn-commit", "after-txn-commit"} {
		t.Run(point, func(t *testing.T) {
			e := newEnv(t, brokers)
			var armed, killed atomic.Bool
			hook := func(p string, _ int32) error {
				if p == point && armed.Load() {
					killed.Store(true)
					return errKill
				}
				return nil
			}
			dir := filepath.Join(t.TempDir(), "stream")
			a := e.processor(Options{hook: hook}, dir)
			deadA := runUntilDead(t, a)
			at := t0.Add(-10 * time.Minute)
			var users, all []string
			for p := range 6 {
				user, dev := fmt.Sprint("fu", p), fmt.Sprint("fd", p)
				users, all = append(users, user), append(all, user, dev)
				e.produce(eventRecord(t, &event.Event{Type: event.Track, Event: "Product Viewed", AnonymousID: dev, MessageID: "v" + dev,
					Timestamp: at, ReceivedAt: at, Properties: map[string]any{"product_id": "p1"}}))
				e.produce(eventRecord(t, &event.Event{Type: event.Identify, AnonymousID: dev, UserID: user, MessageID: "i" + dev,
					Timestamp: at, ReceivedAt: at}))
				for i := range 3 {
					e.produce(eventRecord(t, order(user, fmt.Sprint("o", user, i), at, 10)))
				}
			}
			e.waitCaughtUp(60*time.Second, a)
			for _, u := range users {
				waitFeature(t, e, u, "orders_lifetime", 3.0, 60*time.Second)
				waitFeature(t, e, u, "products_24h", 1.0, 60*time.Second)
			}
			armed.Store(true)
			for p := range 3 {
				e.forgetRequest(identity.User(fmt.Sprint("fd", p)), fmt.Sprint("del-", p))
			}
			if err := waitDead(deadA, 60*time.Second); !errors.Is(err, errKill) || !killed.Load() {
				t.Fatalf("processor a ended with %v, want the injected kill at %s", err, point)
			}
			b := e.processor(Options{}, dir)
			stop := e.run(b)
			gone := all[:6] // fu0 fd0 fu1 fd1 fu2 fd2
			waitVectors(t, e, 60*time.Second, users[3:], gone)
			e.waitCaughtUp(60*time.Second, b)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			final := segmentChanges(t, e) // each change once, in order
			exits := map[string]int{}
			for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.Segments) {
				var rec segment.Record
				if err := json.Unmarshal(r.Value, &rec); err != nil {
					t.Fatal(err)
				}
				if rec.Reason == segment.ReasonDeleted {
					exits[rec.EntityID+"/"+rec.Segment]++
				}
			}
			for _, u := range users[:3] {
				if len(final[u]) > 0 {
					t.Errorf("%s still in %v", u, final[u])
				}
				for _, seg := range []string{"buyers", "odd_orders", "hot"} {
					if exits[u+"/"+seg] != 1 {
						t.Errorf("%s: %d deletion exits of %s, want 1", u, exits[u+"/"+seg], seg)
					}
				}
			}
			for _, u := range users[3:] {
				if !equal(final[u], "buyers", "hot", "odd_orders") {
					t.Errorf("%s (kept): segments %v", u, final[u])
				}
			}
			tab := deletionProgress(t, e) // each part once, the kill's replay included
			for p := range 3 {
				checkDeleted(t, tab, fmt.Sprint("del-", p), 2, 2, false)
			}
		})
	}
}

// TestForgetSeeds: a deletion removes what the seeds machinery keeps of
// the entity (its seeded mark and the events it kept undecided until its
// seed, in Pebble and on the changelog), and a seed of it arriving while
// its marker lasts is dropped, counted deleted; another entity's stay.
func TestForgetSeeds(t *testing.T) {
	e := newEnv(t, nil)
	p := e.processor(Options{}, "")
	ctx := context.Background()
	tk, err := p.openTask(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.close()
	const fp = uint64(0xfeed)
	tk.act[fp] = 0
	for _, id := range []string{"gone", "kept"} {
		for _, k := range [][]byte{seededKey(fp, id), undecidedKey(fp, id, 7), undecidedKey(fp, id, 9)} {
			if err := tk.db.Set(k, []byte("v"), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	commit := func(f func(x *txn) error) {
		t.Helper()
		tk.work.Lock()
		defer tk.work.Unlock()
		x := tk.newTxn()
		defer x.abort()
		x.now, x.links = e.clock.now(), map[string]string{}
		if err := f(x); err != nil {
			t.Fatal(err)
		}
		if err := tk.commit(ctx, x, tk.meta.next); err != nil {
			t.Fatal(err)
		}
	}
	commit(func(x *txn) error {
		return tk.forget(x, resolved{Kind: resolvedForget, To: "gone", At: e.clock.now()}, "test")
	})
	for _, id := range []string{"gone", "kept"} {
		for _, k := range [][]byte{seededKey(fp, id), undecidedKey(fp, id, 7), undecidedKey(fp, id, 9)} {
			if ok, err := tk.has(k); err != nil || ok != (id == "kept") {
				t.Errorf("%s: key %q present %v (%v) after the deletion of gone", id, k, ok, err)
			}
		}
	}
	tombstones := map[string]bool{}
	for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.State) {
		if r.Value == nil {
			tombstones[string(r.Key)] = true
		}
	}
	for _, k := range []string{clSeededPrefix + "feed/gone", undecidedChangelogKey(fp, "gone", 7), undecidedChangelogKey(fp, "gone", 9)} {
		if !tombstones[k] {
			t.Errorf("no changelog tombstone for %s", k)
		}
	}

	// A seed of gone while its marker lasts: dropped.
	deleted0, merged0 := counterValue(mSeeds.WithLabelValues("deleted")), counterValue(mSeeds.WithLabelValues("merged"))
	seed := aggregate.AppendSeed(nil, []aggregate.SeedCut{{Fingerprint: fp, Cut: 0, Seen: 1}}, p.features.NewState())
	if err := tk.applySeeds(ctx, []*kgo.Record{{Key: []byte("gone"), Value: seed, Offset: tk.meta.seedNext}}); err != nil {
		t.Fatal(err)
	}
	if d := counterValue(mSeeds.WithLabelValues("deleted")) - deleted0; d != 1 || counterValue(mSeeds.WithLabelValues("merged")) != merged0 {
		t.Errorf("a seed of a deleted entity: deleted grew by %v, merged by %v; want 1 and 0", d, counterValue(mSeeds.WithLabelValues("merged"))-merged0)
	}
}
