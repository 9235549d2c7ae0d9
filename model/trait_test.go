package model

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestTraitScoreRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	s := 0.25
	r := TraitScore{ChangeID: TraitChangeID("churn_risk", "user", "u1", at, s), Trait: "churn_risk", Model: "churn",
		Version: "abc", Entity: "user", ID: "u1", Score: &s, At: at}
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeTraitScore(b)
	if err != nil || back.ChangeID != r.ChangeID || *back.Score != s || !back.At.Equal(at) || back.Trait != "churn_risk" {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	if TraitChangeID("churn_risk", "user", "u1", at, 0.5) == r.ChangeID || TraitChangeID("churn_risk", "user", "u1", at, s) != r.ChangeID {
		t.Fatal("change ids: same change must agree, another must differ")
	}
	nan := math.NaN()
	if _, err := (&TraitScore{Trait: "x", ID: "1", Score: &nan}).Encode(); err == nil {
		t.Fatal("NaN score encoded")
	}
	if _, err := (&TraitScore{Trait: "x", ID: "1", Score: &s, Previous: &nan}).Encode(); err == nil {
		t.Fatal("NaN previous encoded")
	}
	prev := 0.75
	r.Previous = &prev
	if b, err = r.Encode(); err != nil || !strings.Contains(string(b), `"previous":0.75`) {
		t.Fatalf("with previous: %s %v", b, err)
	}
	if back, err = DecodeTraitScore(b); err != nil || back.Previous == nil || *back.Previous != prev {
		t.Fatalf("previous round trip: %+v %v", back, err)
	}
	r.Previous = nil
	if b, _ = r.Encode(); strings.Contains(string(b), "previous") {
		t.Fatalf("no previous written as %s", b)
	}
	if _, err := DecodeTraitScore([]byte(`{"id":"1"}`)); err == nil {
		t.Fatal("a record without trait decoded")
	}
}
