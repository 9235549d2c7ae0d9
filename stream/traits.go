package stream

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"slices"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/model"
)

// A predictive trait is a model the stream scores after every change of an
// entity's vector (an event, a timer, a seed, a re-score), with the
// scorer's evaluators (model/), keeping the score as a feature of the
// trait's name: rules, models and the API read it like any feature.
//
// The model's inputs are the configured features only (config refuses a
// trait reading a trait or an RFM feature), so a vector's trait scores are
// a function of its configured features: nothing is stored for them, and
// backfill computes the same score from the same features.

// trait is one compiled trait.
type trait struct {
	name    string
	model   string
	version string // first 12 hex digits of the model file's SHA-256, as the scorer's
	m       *model.Model
	// in[i] is the index, in the feature values, of model input i.
	in []int
}

// compileTraits loads the traits' models and maps their inputs onto the
// features names (the configured ones, in Values order).
func compileTraits(cfg *config.Config, names []string) ([]trait, error) {
	var out []trait
	for _, tc := range cfg.Traits {
		if tc.Entity != entity {
			continue
		}
		mc := modelConfig(cfg, tc.Model)
		if mc == nil {
			return nil, fmt.Errorf("trait %s: no model %q", tc.Name, tc.Model)
		}
		data, err := os.ReadFile(cfg.Resolve(mc.Path))
		if err != nil {
			return nil, fmt.Errorf("cannot read model %s of trait %s: %w", mc.Name, tc.Name, err)
		}
		m, err := model.Parse(data, mc.Format)
		if err != nil {
			return nil, fmt.Errorf("cannot load model %s of trait %s: %w", mc.Name, tc.Name, err)
		}
		inputs := mc.Features
		if m.Format() == model.FormatLogistic {
			inputs = m.FeatureNames() // mapped by name, as the scorer does
		} else if len(inputs) != m.NumFeatures() {
			return nil, fmt.Errorf("trait %s: model %s reads %d features, the config lists %d", tc.Name, mc.Name, m.NumFeatures(), len(inputs))
		}
		sum := sha256.Sum256(data)
		tr := trait{name: tc.Name, model: mc.Name, version: hex.EncodeToString(sum[:6]), m: m}
		for _, in := range inputs {
			i := slices.Index(names, in)
			if i < 0 {
				return nil, fmt.Errorf("trait %s: model %s reads %q, which is not a configured user feature", tc.Name, mc.Name, in)
			}
			tr.in = append(tr.in, i)
		}
		out = append(out, tr)
	}
	return out, nil
}

func modelConfig(cfg *config.Config, name string) *config.Model {
	for i := range cfg.Models {
		if cfg.Models[i].Name == name {
			return &cfg.Models[i]
		}
	}
	return nil
}

// traitScratch is a task's buffers for scoring.
type traitScratch struct {
	x, out []float64
}

// score is tr's score of the feature values vals: the first output (the
// positive class's probability of a binary model, the value of a
// regression). Missing or non-numeric inputs are NaN, as the scorer feeds
// them; nil when the score is not a finite number.
func (tr *trait) score(vals []any, sc *traitScratch) any {
	sc.x = slices.Grow(sc.x[:0], len(tr.in))[:len(tr.in)]
	for j, i := range tr.in {
		sc.x[j] = math.NaN()
		if f, ok := vals[i].(float64); ok {
			sc.x[j] = f
		}
	}
	if n := max(1, tr.m.NumClass()); len(sc.out) < n {
		sc.out = make([]float64, n)
	}
	tr.m.Predict(sc.x, sc.out)
	if v := sc.out[0]; !math.IsNaN(v) && !math.IsInf(v, 0) {
		return v
	}
	return nil
}
