package history

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestIdentityLinksLandAndReadBack: the linker's records on pulse.identity
// become identity_links rows (a replayed record once, a compaction
// tombstone none), and Reader.Links gives the backfill the timeline that
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
	recs = append(recs, &kgo.Record{Topic: cfg.Kafka.Topics.Identity, Key: []byte("anonymous_id:gone")}) // tombstone
	produce(t, cfg, recs...)
	startWriter(t, cfg, WriterOptions{FlushInterval: 100 * time.Millisecond})
	conn := openTest(t, native)
	// Both copies of the replayed link land (a background merge may then
	// keep the later one only): wait for the later one's offset.
	dup := recs[len(links)]
	waitCount(t, conn, fmt.Sprintf("SELECT toUInt64(countIf(kafka_offset = %d)) FROM %s.identity_links WHERE identifier = 'anonymous_id:A' AND canonical_id = 'U'", dup.Offset, db), 1, 20*time.Second)
	waitCount(t, conn, "SELECT uniqExact(identifier, canonical_id, message_id) FROM "+db+".identity_links", uint64(len(links)), 20*time.Second)

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
