package backfill

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/identity"
)

// TestVerifyMergedPeople: with identity resolution, user-0's online
// vector counts the events of its anonymous device anon-0 too (merged),
// and anon-0's vector names user-0. Verify with the identity links checks
// anon-0 as user-0 over both ids' events and finds no mismatch; without
// them, user-0 differs (the check is real).
func TestVerifyMergedPeople(t *testing.T) {
	cfg, r, insert := setup(t)
	now := time.Date(2024, 3, 11, 9, 30, 0, 123e6, time.UTC)
	arrival := randomHistory(rand.New(rand.NewPCG(3, 4)), 6, now)
	merged := make([]*event.Event, len(arrival)) // as the person's
	devices := 0
	for i, e := range arrival {
		c := *e
		merged[i] = &c
		if e.UserID == "user-0" && e.Type != event.Identify && i%2 == 0 {
			e.UserID, e.AnonymousID = "", "anon-0"
			devices++
		}
	}
	if devices == 0 {
		t.Fatal("no anonymous event in the history")
	}
	insert(arrival...)
	store := newMemStore()
	var ups []featurestore.Update
	for id, feats := range online(t, cfg, merged, now) {
		ups = append(ups, featurestore.Update{Vector: featurestore.Vector{Entity: "user", ID: id, Features: feats, UpdatedAt: now}})
	}
	ups = append(ups, featurestore.Update{Vector: featurestore.Vector{Entity: "user", ID: "anon-0", Features: map[string]any{}, UpdatedAt: now, CanonicalID: "user-0"}})
	if err := store.Write(context.Background(), ups); err != nil {
		t.Fatal(err)
	}
	links := []identity.Link{
		{Identifier: "user_id:user-0", CanonicalID: "user-0", At: now.Add(-time.Hour), MessageID: "i1", Kind: identity.KindIdentify},
		{Identifier: "anonymous_id:anon-0", CanonicalID: "user-0", At: now.Add(-time.Hour), MessageID: "i1", Kind: identity.KindIdentify},
	}
	vr, err := Verify(context.Background(), cfg, r, store, VerifyOptions{Entities: []string{"anon-0", "user-0", "user-1"}, Links: links})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	vr.Write(&b)
	if vr.Mismatches() != 0 || len(vr.Missing) != 0 || vr.Merged != 1 || !strings.Contains(b.String(), "1 merged into another person") {
		t.Fatalf("verify with links:\n%s", b.String())
	}
	for _, f := range vr.Features {
		if f.Compared != 2 {
			t.Fatalf("%s compared %d times, want 2 (user-0 once, user-1)", f.Feature, f.Compared)
		}
	}
	vr, err = Verify(context.Background(), cfg, r, store, VerifyOptions{Entities: []string{"user-0"}})
	if err != nil {
		t.Fatal(err)
	}
	if vr.Mismatches() == 0 {
		t.Fatal("verify without links found user-0 equal to its own events alone")
	}
}
