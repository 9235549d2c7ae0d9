package model

import (
	"math"
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
	if _, err := DecodeTraitScore([]byte(`{"id":"1"}`)); err == nil {
		t.Fatal("a record without trait decoded")
	}
}
