package backfill

import (
	"context"
	"fmt"
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

// TestTrainingSetLinkedPointInTime: the point-in-time rule of identity
// resolution. anon-9 browsed and ordered, then was linked into user-9 at
// TL; a row for user-9 before TL counts user-9's events alone, a row
// after counts anon-9's too (before the row's time), exactly as one
// state of all those events would; a row of an unlinked user is as ever.
func TestTrainingSetLinkedPointInTime(t *testing.T) {
	cfg, r, insert := setup(t)
	t0 := time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC)
	tl := t0.Add(10 * time.Hour)
	anon := func(e *event.Event) *event.Event { e.UserID, e.AnonymousID = "", "anon-9"; return e }
	evs := []*event.Event{
		order("user-9", t0.Add(time.Hour), 10),
		anon(order("", t0.Add(2*time.Hour), 20)),
		anon(order("", t0.Add(11*time.Hour), 40)),
		order("user-9", t0.Add(12*time.Hour), 80),
		order("user-3", t0.Add(3*time.Hour), 5),
	}
	insert(evs...)
	links := []identity.Link{
		{Identifier: "user_id:user-9", CanonicalID: "user-9", At: tl, MessageID: "i9", Kind: identity.KindIdentify},
		{Identifier: "anonymous_id:anon-9", CanonicalID: "user-9", At: tl, MessageID: "i9", Kind: identity.KindIdentify},
	}
	labels := []Label{
		{EntityID: "user-9", At: t0.Add(5 * time.Hour), Label: "before"},
		{EntityID: "user-9", At: t0.Add(13 * time.Hour), Label: "after"},
		{EntityID: "user-3", At: t0.Add(13 * time.Hour), Label: "other"},
	}
	feats := []string{"orders_lifetime", "revenue_24h"}
	rows, err := TrainingSet(context.Background(), cfg, r, labels, feats, TrainingSetOptions{Links: links})
	if err != nil {
		t.Fatal(err)
	}
	// The reference: one state of the events that count, as of the row.
	want := func(at time.Time, counted ...*event.Event) []any {
		set, idx, err := compile(cfg, feats)
		if err != nil {
			t.Fatal(err)
		}
		st := set.NewState()
		for _, e := range counted {
			if _, err := set.Apply(st, e); err != nil {
				t.Fatal(err)
			}
		}
		vals := set.Values(st, at, nil)
		out := make([]any, len(idx))
		for j, i := range idx {
			out[j] = vals[i]
		}
		return out
	}
	for i, w := range [][]any{
		want(labels[0].At, evs[0]),                         // before the link: user-9's own
		want(labels[1].At, evs[0], evs[1], evs[2], evs[3]), // after: anon-9's too
		want(labels[2].At, evs[4]),
	} {
		if fmt.Sprint(rows.Values[i]) != fmt.Sprint(w) {
			t.Errorf("row %s: %v, want %v", labels[i].Label, rows.Values[i], w)
		}
	}
	// Without links, the after row is user-9's own events only.
	rows, err = TrainingSet(context.Background(), cfg, r, labels[1:2], feats, TrainingSetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rows.Values[0]); got != fmt.Sprint(want(labels[1].At, evs[0], evs[3])) {
		t.Errorf("without links: %v", got)
	}
}
