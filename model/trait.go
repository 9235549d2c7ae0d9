package model

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"time"

	json "github.com/goccy/go-json"
)

// TraitScore is the one record type of the traits topic (pulse.traits,
// JSON, keyed by entity id): a predictive trait's score of one entity,
// written by the stream, in its transaction, each time the score changes.
// History reads it into the trait_scores table.
type TraitScore struct {
	// ChangeID identifies the change (TraitChangeID): a replay of the same
	// change carries the same id, and history collapses it.
	ChangeID string `json:"change_id"`
	Trait    string `json:"trait"`
	Model    string `json:"model"`
	Version  string `json:"version"` // SHA-256 prefix of the model file, as the scorer's
	Entity   string `json:"entity"`
	ID       string `json:"id"`
	// Score is null when the model gave no finite score.
	Score *float64 `json:"score"`
	// Previous is the score before this change: absent when there was
	// none (the entity's first score, or a score that was not finite), and
	// in records written before it existed. Trait destinations compare it
	// with Score (decimals, thresholds).
	Previous *float64  `json:"previous,omitempty"`
	At       time.Time `json:"at"`
}

// TraitChangeID is the id of trait's change to score (NaN: none) for an
// entity at a time.
func TraitChangeID(trait, entity, id string, at time.Time, score float64) string {
	// The hash of "trait\x00entity\x00id\x00<at ms>\x00<score bits, hex>",
	// built on the stack: the stream makes one per score change.
	var buf [128]byte
	b := append(append(buf[:0], trait...), 0)
	b = append(append(b, entity...), 0)
	b = append(append(b, id...), 0)
	b = append(strconv.AppendInt(b, at.UnixMilli(), 10), 0)
	b = strconv.AppendUint(b, math.Float64bits(score), 16)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// Encode is the record value.
func (r *TraitScore) Encode() ([]byte, error) {
	for _, v := range []*float64{r.Score, r.Previous} {
		if v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0)) {
			return nil, fmt.Errorf("cannot encode trait score %v: not finite", *v)
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("cannot encode trait score: %w", err)
	}
	return b, nil
}

// DecodeTraitScore reads a traits record; trait and id are required.
func DecodeTraitScore(b []byte) (TraitScore, error) {
	var r TraitScore
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("cannot decode trait score: %w", err)
	}
	if r.Trait == "" || r.ID == "" {
		return r, fmt.Errorf("trait score without trait or id")
	}
	return r, nil
}
