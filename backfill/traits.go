package backfill

import (
	"fmt"
	"math"
	"os"
	"slices"

	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/model"
)

// traitCheck scores a predictive trait offline as the stream does online
// (stream/traits.go): the model's first output over the entity's values,
// missing or non-numeric inputs NaN, nil when not finite.
type traitCheck struct {
	name   string
	m      *model.Model
	in     []int // set index of each model input
	x, out []float64
}

// splitChecks sorts Verify's feature list into the configured features,
// the predictive traits and the RFM features: with names empty, every user
// feature (features nil), trait and, when the config scores users, RFM
// feature; otherwise what names lists (features empty, not nil, when it
// lists none).
func splitChecks(cfg *config.Config, names []string) (features, traits, rfmNames []string) {
	rfmOn := cfg.RFM != nil && (cfg.RFM.Entity == "" || cfg.RFM.Entity == aggregate.DefaultEntity)
	isTrait := func(n string) bool {
		return slices.ContainsFunc(cfg.Traits, func(t config.Trait) bool { return t.Name == n && t.Entity == aggregate.DefaultEntity })
	}
	if len(names) == 0 {
		for _, t := range cfg.Traits {
			if t.Entity == aggregate.DefaultEntity {
				traits = append(traits, t.Name)
			}
		}
		if rfmOn {
			rfmNames = rfmFeatures
		}
		return nil, traits, rfmNames
	}
	features = []string{}
	for _, n := range names {
		switch {
		case rfmOn && slices.Contains(rfmFeatures, n):
			rfmNames = append(rfmNames, n)
		case isTrait(n):
			traits = append(traits, n)
		default:
			features = append(features, n)
		}
	}
	return features, traits, rfmNames
}

// compileTraits loads the named traits' models over set's values.
func compileTraits(cfg *config.Config, set *aggregate.Set, names []string) ([]traitCheck, error) {
	var out []traitCheck
	for _, name := range names {
		i := slices.IndexFunc(cfg.Traits, func(t config.Trait) bool { return t.Name == name })
		mc := (*config.Model)(nil)
		for j := range cfg.Models {
			if cfg.Models[j].Name == cfg.Traits[i].Model {
				mc = &cfg.Models[j]
			}
		}
		if mc == nil {
			return nil, fmt.Errorf("trait %s: no model %q", name, cfg.Traits[i].Model)
		}
		data, err := os.ReadFile(cfg.Resolve(mc.Path))
		if err != nil {
			return nil, fmt.Errorf("cannot read model %s of trait %s: %w", mc.Name, name, err)
		}
		m, err := model.Parse(data, mc.Format)
		if err != nil {
			return nil, fmt.Errorf("cannot load model %s of trait %s: %w", mc.Name, name, err)
		}
		inputs := mc.Features
		if m.Format() == model.FormatLogistic {
			inputs = m.FeatureNames()
		}
		c := traitCheck{name: name, m: m, out: make([]float64, max(1, m.NumClass()))}
		for _, in := range inputs {
			k := set.Index(in)
			if k < 0 {
				return nil, fmt.Errorf("trait %s: model %s reads %q, not a user feature", name, mc.Name, in)
			}
			c.in = append(c.in, k)
		}
		c.x = make([]float64, len(c.in))
		out = append(out, c)
	}
	return out, nil
}

func (c *traitCheck) score(vals []any) any {
	for j, k := range c.in {
		c.x[j] = math.NaN()
		if f, ok := vals[k].(float64); ok {
			c.x[j] = f
		}
	}
	c.m.Predict(c.x, c.out)
	if v := c.out[0]; !math.IsNaN(v) && !math.IsInf(v, 0) {
		return v
	}
	return nil
}
