package backfill

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/identity"
)

// TestIdentityPointInTime: anonymous A browses and buys, then identifies as
// U at Tl. A training row for U before Tl has U's events only; from Tl on it
// has A's too (before and after the link); a row for A from Tl on is U's.
// The direct backfill writes the person under U and nothing under A, as
// the stream does, and verify checks the person, sampled as A or U. With
// identity off, A stays its own entity.
func TestIdentityPointInTime(t *testing.T) {
	cfg, r, insert := setup(t)
	T0 := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	Tl := T0.Add(-30 * time.Minute)
	anon := func(e *event.Event) *event.Event { e.AnonymousID, e.UserID = "A", ""; return e }
	insert(
		anon(order("", T0.Add(-3*time.Hour), 10)),
		anon(ev(event.Page, "", "", T0.Add(-2*time.Hour), nil, nil)),
		order("U", T0.Add(-time.Hour), 5),
		anon(order("", T0.Add(-10*time.Minute), 7)),
		order("W", T0.Add(-time.Hour), 1),
	)
	conn := r.Conn()
	if err := history.InsertLinks(context.Background(), conn, r.Database(), []identity.Link{
		{Identifier: "user_id:U", CanonicalID: "U", At: Tl, MessageID: "i1", Kind: "identify"},
		{Identifier: "anonymous_id:A", CanonicalID: "U", At: Tl, MessageID: "i1", Kind: "identify"},
	}); err != nil {
		t.Fatal(err)
	}

	labels := []Label{
		{EntityID: "U", At: Tl.Add(-time.Millisecond)}, // before the link: U's own order only
		{EntityID: "U", At: Tl},                        // the link counts at its time: A's order and U's
		{EntityID: "U", At: T0},                        // and A's order after the link
		{EntityID: "A", At: T0.Add(-150 * time.Minute)},
		{EntityID: "A", At: T0},
		{EntityID: "W", At: T0},
		{EntityID: "nobody", At: T0},
	}
	rows, err := TrainingSet(context.Background(), cfg, r, labels, []string{"orders_lifetime", "revenue_24h", "pages_7d"}, TrainingSetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]any{
		{1.0, 5.0, 0.0},
		{2.0, 15.0, 1.0},
		{3.0, 22.0, 1.0},
		{1.0, 10.0, 0.0},
		{3.0, 22.0, 1.0},
		{1.0, 1.0, 0.0},
		{0.0, 0.0, 0.0},
	}
	for i := range labels {
		for j, w := range want[i] {
			if !same(rows.Values[i][j], w) {
				t.Errorf("row %d (%s at %s) %s = %v, want %v", i, labels[i].EntityID, labels[i].At.Format(time.TimeOnly), rows.Features[j], rows.Values[i][j], w)
			}
		}
	}

	store := newMemStore()
	rep, err := Features(context.Background(), cfg, r, store, FeaturesOptions{Now: T0})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entities != 3 || rep.Events != 5 {
		t.Errorf("report %+v, want 3 ids read and 5 events", rep)
	}
	u, err := store.Get(context.Background(), "user", "U")
	if err != nil || u.Features["orders_lifetime"] != 3.0 || u.Features["revenue_24h"] != 22.0 || u.Features["pages_7d"] != 1.0 {
		t.Errorf("U online after backfill: %+v, %v", u.Features, err)
	}
	if a, err := store.Get(context.Background(), "user", "A"); err == nil {
		t.Errorf("A has a vector of its own after the backfill: %+v", a.Features)
	}
	for _, o := range []VerifyOptions{{Sample: 10}, {Entities: []string{"A"}}} {
		vr, err := Verify(context.Background(), cfg, r, store, o)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		vr.Write(&b)
		if vr.Mismatches() != 0 || len(vr.Missing) != 0 || vr.Features[0].Compared == 0 {
			t.Errorf("verify %+v:\n%s", o, b.String())
		}
	}
	// A corrupted person is found when sampled through its anonymous id.
	u.Features["revenue_24h"] = 1.0
	store.vecs["user/U"] = u
	vr, err := Verify(context.Background(), cfg, r, store, VerifyOptions{Entities: []string{"A"}})
	if err != nil {
		t.Fatal(err)
	}
	if vr.Mismatches() != 1 {
		var b strings.Builder
		vr.Write(&b)
		t.Errorf("verify of a corrupted person:\n%s", b.String())
	}

	off := false
	cfg.Identity.Enabled = &off
	rows, err = TrainingSet(context.Background(), cfg, r, labels[4:5], []string{"orders_lifetime"}, TrainingSetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rows.Values[0][0] != 2.0 {
		t.Errorf("identity off: A at T0 has %v orders, want its own 2", rows.Values[0][0])
	}
}
