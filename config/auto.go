package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/rfm"
	"gopkg.in/yaml.v3"
)

// RFM configures live RFM groups (docs/segments.md): each buyer's
// recency, frequency and monetary scores by quantile of the population,
// its group, and one segment rfm:<group> per group.
type RFM struct {
	// Entity is the entity scored. Default user (the only one the stream computes).
	Entity string `yaml:"entity"`
	// Recency names a feature in days since the last order (fewer is
	// better). An entity whose recency is missing or negative has never
	// ordered: its group is prospects.
	Recency string `yaml:"recency"`
	// Frequency and Monetary name features where more is better.
	Frequency string `yaml:"frequency"`
	Monetary  string `yaml:"monetary"`
	// Scores per dimension, 1..Scores. Default 5 (2..10).
	Scores int `yaml:"scores"`
	// Refresh is how often the boundaries are recomputed. Default 10m.
	Refresh Duration `yaml:"refresh"`
	// Groups is "default" (or absent) for the default table, or a list.
	Groups RFMGroups `yaml:"groups"`

	Line int `yaml:"-"`
}

// RFMGroups is the group table: nil for the default.
type RFMGroups []RFMGroup

// RFMGroup is one row of a custom table: ranges of scores ("4-5", "3",
// "*" or empty for any).
type RFMGroup struct {
	Name string `yaml:"name"`
	R    string `yaml:"r"`
	F    string `yaml:"f"`
	M    string `yaml:"m"`
}

// UnmarshalYAML reads "default" or a list of groups.
func (g *RFMGroups) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value != "default" && n.Value != "" {
			return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: rfm.groups must be \"default\" or a list of {name, r, f, m}", n.Line)}}
		}
		*g = nil
		return nil
	}
	var list []RFMGroup
	if err := n.Decode(&list); err != nil {
		return err
	}
	*g = list
	return nil
}

// Table is the group table the config asks for, checked.
func (r *RFM) Table() ([]rfm.Group, error) {
	if len(r.Groups) == 0 {
		if r.Scores != rfm.DefaultScores {
			return nil, fmt.Errorf("the default groups are for 5 scores; list your own groups for %d", r.Scores)
		}
		return rfm.DefaultGroups(), nil
	}
	out := make([]rfm.Group, len(r.Groups))
	for i, g := range r.Groups {
		out[i].Name = g.Name
		for _, d := range []struct {
			s   string
			dst *rfm.Range
		}{{g.R, &out[i].R}, {g.F, &out[i].F}, {g.M, &out[i].M}} {
			rg, err := rfm.ParseRange(d.s, r.Scores)
			if err != nil {
				return nil, fmt.Errorf("group %q: %w", g.Name, err)
			}
			*d.dst = rg
		}
	}
	if err := rfm.CheckGroups(out, r.Scores); err != nil {
		return nil, err
	}
	return out, nil
}

// GroupNames lists the group names, prospects last.
func (r *RFM) GroupNames() []string {
	t, err := r.Table()
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(t)+1)
	for _, g := range t {
		out = append(out, g.Name)
	}
	return append(out, rfm.Prospects)
}

// The features RFM adds to its entity's vector.
const (
	FeatureRFMR             = "rfm_r"
	FeatureRFMF             = "rfm_f"
	FeatureRFMM             = "rfm_m"
	FeatureRFMGroup         = "rfm_group"
	FeatureRFMPreviousGroup = "rfm_previous_group"
	FeatureRFMChangedAt     = "rfm_changed_at"
)

// Trait is a predictive trait: a model the stream scores on every change
// of the entity's vector, kept as a feature of that name.
type Trait struct {
	Name   string `yaml:"name"`
	Model  string `yaml:"model"`
	Entity string `yaml:"entity"` // default user

	Line int `yaml:"-"`
}

// AutoFeature is a feature the stream computes after the configured ones:
// traits and RFM. Kind is "number" or "string" (segment.ParseKind).
type AutoFeature struct {
	Name string
	Kind string
}

// AutoFeatures lists, in vector order, the features traits and RFM add to
// entity's vector: each trait, then rfm_r, rfm_f, rfm_m, rfm_group,
// rfm_previous_group, rfm_changed_at.
func (c *Config) AutoFeatures(entity string) []AutoFeature {
	var out []AutoFeature
	for _, t := range c.Traits {
		if t.Entity == entity {
			out = append(out, AutoFeature{t.Name, "number"})
		}
	}
	if c.RFM != nil && c.RFM.Entity == entity {
		out = append(out,
			AutoFeature{FeatureRFMR, "number"}, AutoFeature{FeatureRFMF, "number"}, AutoFeature{FeatureRFMM, "number"},
			AutoFeature{FeatureRFMGroup, "string"}, AutoFeature{FeatureRFMPreviousGroup, "string"},
			AutoFeature{FeatureRFMChangedAt, "number"})
	}
	return out
}

// rfmSegments are the segments of the RFM groups, one per group and
// prospects: rfm:<group>, rule rfm_group == "<group>".
func (c *Config) rfmSegments() []Segment {
	if c.RFM == nil {
		return nil
	}
	var out []Segment
	for _, g := range c.RFM.GroupNames() {
		out = append(out, Segment{
			Name:        rfm.SegmentPrefix + g,
			Description: "RFM group " + g + " (automatic)",
			Entity:      c.RFM.Entity,
			Rule:        fmt.Sprintf("%s == %q", FeatureRFMGroup, g),
			Auto:        true,
			Line:        c.RFM.Line,
		})
	}
	return out
}

func (c *Config) applyAutoDefaults() {
	if r := c.RFM; r != nil {
		setDefault(&r.Entity, "user")
		if r.Scores == 0 {
			r.Scores = rfm.DefaultScores
		}
		if r.Refresh == 0 {
			r.Refresh = Duration(10 * time.Minute)
		}
	}
	for i := range c.Traits {
		setDefault(&c.Traits[i].Entity, "user")
	}
}

// validateAuto checks the rfm and traits blocks against the features and
// models.
func (c *Config) validateAuto(add func(line int, path, format string, args ...any), nl nodeLines) {
	names := map[string]string{} // feature name -> entity
	for _, f := range c.Features {
		names[f.Name] = f.Entity
	}
	taken := func(n string) bool { _, ok := names[n]; return ok }
	if r := c.RFM; r != nil {
		line := func(k string) int { return nl.path("rfm." + k) }
		if r.Entity != "user" {
			add(line("entity"), "rfm.entity", "the stream computes user features only, got %q", r.Entity)
		}
		for _, d := range []struct{ key, name string }{{"recency", r.Recency}, {"frequency", r.Frequency}, {"monetary", r.Monetary}} {
			switch {
			case d.name == "":
				add(line(d.key), "rfm."+d.key, "required: the name of a feature")
			case names[d.name] != r.Entity:
				add(line(d.key), "rfm."+d.key, "no %s feature %q", r.Entity, d.name)
			}
		}
		if r.Scores < 2 || r.Scores > 10 {
			add(line("scores"), "rfm.scores", "must be between 2 and 10, got %d", r.Scores)
		} else if _, err := r.Table(); err != nil {
			add(line("groups"), "rfm.groups", "%v", err)
		}
		if r.Refresh.D() < time.Second || r.Refresh.D() > 7*24*time.Hour {
			add(line("refresh"), "rfm.refresh", "must be between 1s and 7d")
		}
		for _, n := range []string{FeatureRFMR, FeatureRFMF, FeatureRFMM, FeatureRFMGroup, FeatureRFMPreviousGroup, FeatureRFMChangedAt} {
			if taken(n) {
				add(line("entity"), "rfm", "feature %q is computed by rfm: rename the configured feature", n)
			}
			names[n] = r.Entity
		}
	}
	models := map[string]*Model{}
	for i := range c.Models {
		models[c.Models[i].Name] = &c.Models[i]
	}
	for i, t := range c.Traits {
		p := fmt.Sprintf("traits[%d]", i)
		if t.Name != "" {
			p = fmt.Sprintf("traits[%s]", t.Name)
		}
		line := func(k string) int { return nl.field("traits", i, k) }
		switch {
		case !nameRE.MatchString(t.Name):
			add(line("name"), p+".name", "must be an identifier (letters, digits, _), got %q", t.Name)
		case taken(t.Name):
			add(line("name"), p+".name", "%q is already a feature", t.Name)
		}
		names[t.Name] = t.Entity
		m := models[t.Model]
		switch {
		case t.Model == "":
			add(line("model"), p+".model", "required: a model from models")
		case m == nil:
			add(line("model"), p+".model", "no model %q in models", t.Model)
		case m.Entity != t.Entity:
			add(line("model"), p+".model", "model %q is for entity %q, the trait for %q", t.Model, m.Entity, t.Entity)
		case len(m.Labels) > 2:
			add(line("model"), p+".model", "model %q has %d classes; a trait keeps one score", t.Model, len(m.Labels))
		}
		if t.Entity != "user" {
			add(line("entity"), p+".entity", "the stream computes user features only, got %q", t.Entity)
		}
		for _, in := range modelInputs(m) {
			if in == t.Name || strings.HasPrefix(in, "rfm_") && c.RFM != nil {
				add(line("model"), p+".model", "model %q reads %q, computed after the traits", t.Model, in)
			}
		}
	}
}

func modelInputs(m *Model) []string {
	if m == nil {
		return nil
	}
	return m.Features
}
