package history

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestIdentityLinksLandAndReadBack: the linker's records on pulse.identity
// become identity_links rows (a replayed record once, a compaction
// tombstone none, nor the linker's fence), and Reader.Links gives the backfill the timeline that
// resolves A to U only from the link's time on, then to V.
func TestIdentityLinksLandAndReadBack(t *testing.T) {
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	cfg := testConfig(t, native, db)
	t1 := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)
	links := []identity.Link{
		{Identifier: "user_id:U", CanonicalID: "U", At: t1, MessageID: "i1", Kind: identity.LinkKind("identify")},
		{Identifier: "anonymous_id:A", CanonicalID: "U", At: t1, MessageID: "i1", Kind: identity.LinkKind("identify")},
		{Identifier: "anonymous_id:A", CanonicalID: "V", Previous: "U", At: t2, MessageID: "al1", Kind: identity.LinkKind("alias")},
		{Identifier: "user_id:U", CanonicalID: "V", Previous: "U", At: t2, MessageID: "al1", Kind: identity.LinkKind("alias")},
		{Identifier: "user_id:V", CanonicalID: "V", At: t2, MessageID: "al1", Kind: identity.LinkKind("alias")},
	}
	var recs []*kgo.Record
	for _, l := range append(links, links[1]) { // links[1] replayed
		b, err := identity.EncodeLink(l)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: cfg.Kafka.Topics.Identity, Key: []byte(l.Identifier), Value: b})
	}
	recs = append(recs, &kgo.Record{Topic: cfg.Kafka.Topics.Identity, Key: []byte("anonymous_id:gone")}, // tombstone
		&kgo.Record{Topic: cfg.Kafka.Topics.Identity, Key: []byte("__linker/fence"), Value: []byte("00ff")}) // the linker's own
	produce(t, cfg, recs...)
	startWriter(t, cfg, WriterOptions{FlushInterval: 100 * time.Millisecond})
	conn := openTest(t, native)
	// Both copies of the replayed link land (a background merge may then
	// keep the later one only): wait for the later one's offset.
	dup := recs[len(links)]
	waitCount(t, conn, fmt.Sprintf("SELECT toUInt64(countIf(kafka_offset = %d)) FROM %s.identity_links WHERE identifier = 'anonymous_id:A' AND canonical_id = 'U'", dup.Offset, db), 1, 20*time.Second)
	waitCount(t, conn, "SELECT uniqExact(identifier, canonical_id, message_id) FROM "+db+".identity_links", uint64(len(links)), 20*time.Second)

	var invalid uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM "+db+".invalid_events").Scan(&invalid); err != nil || invalid != 0 {
		t.Errorf("invalid_events holds %d rows (%v): the tombstone or the linker's fence was taken for a bad link", invalid, err)
	}
	got, err := NewReader(conn, db).Links(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(links) {
		t.Fatalf("Links read %d links, want %d (the replayed one once): %+v", len(got), len(links), got)
	}
	for _, l := range got {
		if l.Identifier == "anonymous_id:A" && l.CanonicalID == "V" && (l.Previous != "U" || l.Kind != "alias" || !l.At.Equal(t2)) {
			t.Errorf("A's second link read back as %+v", l)
		}
	}
	tl := identity.NewTimeline(got...)
	for _, c := range []struct {
		at   time.Time
		want string
	}{{t1.Add(-time.Millisecond), "A"}, {t1, "U"}, {t2.Add(-time.Millisecond), "U"}, {t2, "V"}} {
		if r := tl.Resolve("A", c.at); r != c.want {
			t.Errorf("A at %v resolves to %s, want %s", c.at, r, c.want)
		}
	}
}

// TestRecentEventsAndTraits: a person's latest events over its ids, newest
// first and each message once (a replayed insert), and its traits merged
// by event time across ids.
func TestRecentEventsAndTraits(t *testing.T) {
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	conn := openTest(t, native)
	ctx := context.Background()
	if err := Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	evs := []*event.Event{
		{Type: event.Identify, MessageID: "i1", AnonymousID: "A", Traits: map[string]any{"plan": "free", "email": "a@x"}, Timestamp: t0, ReceivedAt: t0},
		{Type: event.Track, MessageID: "o1", AnonymousID: "A", Event: "Order Completed", Properties: map[string]any{"revenue": 5.0}, Timestamp: t0.Add(time.Minute), ReceivedAt: t0},
		{Type: event.Identify, MessageID: "i2", UserID: "U", Traits: map[string]any{"plan": "pro"}, Timestamp: t0.Add(time.Hour), ReceivedAt: t0},
		{Type: event.Track, MessageID: "o2", UserID: "U", Event: "Order Completed", Timestamp: t0.Add(2 * time.Hour), ReceivedAt: t0},
		{Type: event.Track, MessageID: "x", UserID: "other", Event: "Order Completed", Timestamp: t0.Add(3 * time.Hour), ReceivedAt: t0},
	}
	for range 2 { // the second insert is a replay
		if err := InsertEvents(ctx, conn, db, evs); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(conn, db)
	got, err := r.RecentEvents(ctx, []string{"U", "A"}, 3)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range got {
		ids = append(ids, e.MessageID)
	}
	if strings.Join(ids, ",") != "o2,i2,o1" {
		t.Errorf("recent events %v, want o2,i2,o1", ids)
	}
	if len(got) == 3 && (string(got[2].Properties) != `{"revenue":5}` || got[2].AnonymousID != "A" || !got[2].Timestamp.Equal(t0.Add(time.Minute))) {
		t.Errorf("o1 read back as %+v", got[2])
	}
	traits, err := r.LatestTraits(ctx, []string{"U", "A"})
	if err != nil {
		t.Fatal(err)
	}
	if len(traits) != 2 || traits["plan"] != "pro" || traits["email"] != "a@x" {
		t.Errorf("traits %v, want plan pro (the later identify) and email a@x", traits)
	}
}
