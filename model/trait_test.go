package model

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
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

// TraitChangeID is the hash it always was: consumers dedupe on it across
// builds.
func TestTraitChangeIDStable(t *testing.T) {
	was := func(trait, entity, id string, at time.Time, score float64) string {
		h := sha256.New()
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%d\x00", trait, entity, id, at.UnixMilli())
		h.Write(strconv.AppendUint(nil, math.Float64bits(score), 16))
		return hex.EncodeToString(h.Sum(nil)[:16])
	}
	long := strings.Repeat("x", 300)
	for _, c := range []struct {
		trait, id string
		at        time.Time
		score     float64
	}{
		{"churn_risk", "u1", time.UnixMilli(1_700_000_000_123), 0.25},
		{"", "", time.UnixMilli(-5), math.NaN()},
		{"a\x00b", long, time.UnixMilli(0), math.Inf(-1)},
		{long, "é", time.Date(2026, 1, 1, 0, 0, 0, 999_999, time.UTC), math.Copysign(0, -1)},
	} {
		if got, want := TraitChangeID(c.trait, "user", c.id, c.at, c.score), was(c.trait, "user", c.id, c.at, c.score); got != want {
			t.Errorf("TraitChangeID(%q, %q, %v, %v) = %s, was %s", c.trait, c.id, c.at, c.score, got, want)
		}
	}
}
