package stream

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/identity"
	"github.com/twmb/franz-go/pkg/kgo"
)

func viewEvent(anon, msg, product string, at time.Time) *event.Event {
	return &event.Event{Type: event.Track, Event: "Product Viewed", AnonymousID: anon, MessageID: msg,
		Timestamp: at, ReceivedAt: at, Properties: map[string]any{"product_id": product}}
}

func identifyEvent(anon, user, msg string, at time.Time) *event.Event {
	return &event.Event{Type: event.Identify, AnonymousID: anon, UserID: user, MessageID: msg, Timestamp: at, ReceivedAt: at}
}

// TestLinkerStartsFromItsState: a linker started again on its data dir
// reads none of the identity topic's links back (its state holds them)
// and still knows every person: a new device merges into its person, and
// the person's deletion takes every device linked before the restart. On
// an empty data dir the linker reads the whole topic.
func TestLinkerStartsFromItsState(t *testing.T) {
	e := newEnv(t, nil)
	dir := t.TempDir()
	at := t0.Add(-10 * time.Minute)
	p := e.processor(Options{}, dir)
	stop := e.run(p)
	var devices []string
	for i := range 5 {
		dev := fmt.Sprint("dev-", i)
		devices = append(devices, dev)
		e.produce(eventRecord(t, viewEvent(dev, "v-"+dev, dev, at)), eventRecord(t, identifyEvent(dev, "pu", "i-"+dev, at)))
	}
	waitFeature(t, e, "pu", "products_24h", 5.0, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if p.linkerRead.Load() != 0 {
		t.Errorf("the first linker read %d links back from an empty topic", p.linkerRead.Load())
	}

	p = e.processor(Options{}, dir)
	stop = e.run(p)
	e.produce(eventRecord(t, viewEvent("dev-5", "v-dev-5", "dev-5", at)), eventRecord(t, identifyEvent("dev-5", "pu", "i-dev-5", at)))
	waitFeature(t, e, "pu", "products_24h", 6.0, 30*time.Second)
	e.forgetRequest(identity.User("pu"), "del-1")
	waitVectors(t, e, 30*time.Second, nil, append(devices, "pu", "dev-5"))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := p.linkerRead.Load(); n != 0 {
		t.Errorf("the linker started again on its state read %d links back, want 0", n)
	}
	tab := deletionProgress(t, e)
	checkDeleted(t, tab, "del-1", 7, 7, false)

	p = e.processor(Options{}, t.TempDir())
	stop = e.run(p)
	e.produce(eventRecord(t, viewEvent("dev-x", "v-dev-x", "px", at)), eventRecord(t, identifyEvent("dev-x", "qu", "i-dev-x", at)))
	waitFeature(t, e, "qu", "products_24h", 1.0, 30*time.Second) // merged: the linker is open
	stop()
	if n := p.linkerRead.Load(); n < 14 { // 7 links and 7 tombstones, or what compaction left of them
		t.Errorf("a linker on an empty data dir read %d links, want the whole topic (14)", n)
	}
}

// TestLinkerStaleStateReadsWholeTopic: a linker whose state is older than
// half the identity topic's delete.retention.ms reads the whole topic, so
// a device of a person deleted meanwhile, whose tombstone compaction
// removed, is no longer the person's: it links to the user who logs in on
// it next (the old state would refuse it as a second known user's).
func TestLinkerStaleStateReadsWholeTopic(t *testing.T) {
	e := newEnv(t, nil)
	old := t.TempDir()
	at := t0.Add(-10 * time.Minute)
	devicePersonThenStop(t, e, old, at)

	forgetElsewhereAndCompact(t, e, "pu", nil, []string{"pu", "dev-a"}, e.cfg.Kafka.Topics.Identity, "anonymous_id:dev-a", "user_id:pu")

	e.clock.set(e.clock.now().Add(31 * time.Minute))
	stale0 := counterValue(mStaleStates)
	stop := e.run(e.processor(Options{}, old))
	now := e.clock.now()
	e.produce(eventRecord(t, viewEvent("dev-a", "v2", "p2", now)), eventRecord(t, identifyEvent("dev-a", "qu", "i2", now)))
	waitFeature(t, e, "qu", "products_24h", 1.0, 30*time.Second)
	stop()
	if counterValue(mStaleStates) == stale0 {
		t.Error("pulse_stream_stale_states_total did not grow")
	}
}

// TestLinkerTopicRecreated: a linker whose identity topic was deleted and
// made again (the rebuild identity.md describes, the data dir kept)
// builds its state from the new topic, even where the new topic's offsets
// have passed the old one's: a device linked in the old graph is free to
// link to another user.
func TestLinkerTopicRecreated(t *testing.T) {
	e := newEnv(t, nil)
	dir := t.TempDir()
	at := t0.Add(-10 * time.Minute)
	devicePersonThenStop(t, e, dir, at)

	// A new, empty broker with the same topic names, its identity topic
	// already past the old one's offsets.
	e2 := e.anew()
	for i := range 200 {
		id := identity.User(fmt.Sprint("other-", i))
		v, err := identity.EncodeLink(identity.Link{Identifier: id.String(), CanonicalID: id.Value, At: at, MessageID: "m", Kind: identity.KindIdentify})
		if err != nil {
			t.Fatal(err)
		}
		r := &kgo.Record{Topic: e2.cfg.Kafka.Topics.Identity, Key: []byte(id.String()), Value: v}
		if err := e2.prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	p := e2.processor(Options{}, dir)
	e2.run(p)
	// The link request straight to the linker (the tasks' state is the
	// old broker's: this test is the linker's), and its link on the new
	// topic.
	q := identity.Request{From: identity.Anonymous("dev-a"), To: identity.User("qu"), Kind: identity.KindIdentify, At: at, MessageID: "i2"}
	v, err := identity.EncodeRequest(q)
	if err != nil {
		t.Fatal(err)
	}
	r := &kgo.Record{Topic: e2.cfg.Kafka.Topics.IdentityRequests, Key: []byte("qu"), Value: v}
	if err := e2.prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		linked := false
		for _, r := range readTopic(t, e2, e2.cfg.Kafka.Topics.Identity) {
			if string(r.Key) == "anonymous_id:dev-a" && r.Value != nil {
				l, err := identity.DecodeLink(r.Value)
				linked = err == nil && l.CanonicalID == "qu"
			}
		}
		if linked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("dev-a was not linked to qu: the linker kept the old topic's graph")
		}
	}
	if n := p.linkerRead.Load(); n < 200 {
		t.Errorf("the linker read %d links of the new topic, want all 200", n)
	}
}

// devicePersonThenStop runs a processor on data dir dir until device
// dev-a, which viewed a product at at, is user pu's (an identify), then
// stops it.
func devicePersonThenStop(t *testing.T, e *env, dir string, at time.Time) {
	t.Helper()
	stop := e.run(e.processor(Options{}, dir))
	e.produce(eventRecord(t, viewEvent("dev-a", "v1", "p1", at)), eventRecord(t, identifyEvent("dev-a", "pu", "i1", at)))
	waitFeature(t, e, "pu", "products_24h", 1.0, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
