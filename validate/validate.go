// Package validate checks a config across the packages that give it
// meaning: feature expressions and filters (aggregate), segment rules
// against the features' types (segment), and, through a check the caller
// passes, model files against their configured inputs. config checks each
// field on its own; this package checks what needs the pure packages above
// it, for `pulse validate` and for `pulse stream`'s reload.
//
// It imports only the pure floors (config, aggregate, segment), so any
// package may use it; the model check reads files and is the scorer's own
// (scorer.CheckModel), so cmd/pulse passes it in.
package validate

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/segment"
)

// ModelCheck checks one configured model as the scorer will load it
// (scorer.CheckModel).
type ModelCheck func(*config.Config, config.Model) error

// Config reports every problem of cfg (read from file) that config.Load
// cannot see, sorted by line: features that do not compile, segment rules
// that name unknown features or compare them with the wrong type, segments
// of an entity with no features and, with checkModel, models whose file
// does not load or does not fit its config. A nil checkModel skips models.
func Config(cfg *config.Config, file string, checkModel ModelCheck) config.Errors {
	var errs config.Errors
	sets, err := aggregate.CompileAll(cfg.Features, aggregate.Options{AllowedLateness: cfg.Stream.AllowedLateness.D()})
	var ferrs aggregate.Errors
	if errors.As(err, &ferrs) {
		for _, fe := range ferrs {
			errs = append(errs, config.Problem{File: file, Line: fe.Line, Msg: fe.Error()})
		}
	} else if err != nil {
		errs = append(errs, config.Problem{File: file, Msg: err.Error()})
	}
	entities := map[string][]string{}
	for _, f := range cfg.Features {
		entities[f.Entity] = append(entities[f.Entity], f.Name)
	}
	for entity, names := range entities {
		if set := sets[entity]; set != nil {
			errs = append(errs, segments(cfg, entity, set.Names(), SegmentKinds(set), file)...)
			continue
		}
		// The features did not compile: still check the rules' names,
		// with every feature's type unknown.
		errs = append(errs, segments(cfg, entity, names, make([]segment.Kind, len(names)), file)...)
	}
	for _, s := range cfg.Segments {
		if entities[s.Entity] == nil {
			errs = append(errs, config.Problem{File: file, Line: s.Line, Path: "segments[" + s.Name + "].entity", Msg: fmt.Sprintf("no features are defined for entity %q", s.Entity)})
		}
	}
	for _, m := range cfg.Models {
		if checkModel != nil {
			if err := checkModel(cfg, m); err != nil {
				errs = append(errs, config.Problem{File: file, Line: m.Line, Path: "models[" + m.Name + "]", Msg: err.Error()})
			}
		}
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
	return errs
}

// segments compiles entity's segment rules against its features' names
// and kinds.
func segments(cfg *config.Config, entity string, names []string, kinds []segment.Kind, file string) config.Errors {
	segs := segment.ForEntity(cfg.Segments, entity)
	if len(segs) == 0 {
		return nil
	}
	names, kinds = WithAutoFeatures(cfg, entity, names, kinds)
	_, err := segment.Compile(segs, names, kinds)
	var serrs segment.Errors
	if !errors.As(err, &serrs) {
		if err != nil {
			return config.Errors{{File: file, Msg: err.Error()}}
		}
		return nil
	}
	lines := map[string]int{}
	for _, s := range segs {
		lines[s.Name] = s.Line
	}
	var out config.Errors
	for _, se := range serrs {
		out = append(out, config.Problem{File: file, Line: lines[se.Segment], Msg: se.Error()})
	}
	return out
}

// WithAutoFeatures appends to names and kinds the features traits and RFM
// add to entity's vector (config.AutoFeatures), in the stream's order.
func WithAutoFeatures(cfg *config.Config, entity string, names []string, kinds []segment.Kind) ([]string, []segment.Kind) {
	auto := cfg.AutoFeatures(entity)
	if len(auto) == 0 {
		return names, kinds
	}
	names, kinds = slices.Clone(names), slices.Clone(kinds)
	for _, f := range auto {
		k, _ := segment.ParseKind(f.Kind)
		names, kinds = append(names, f.Name), append(kinds, k)
	}
	return names, kinds
}

// SegmentKinds maps the features' kinds to the segment compiler's.
func SegmentKinds(set *aggregate.Set) []segment.Kind {
	kinds := make([]segment.Kind, len(set.Kinds()))
	for i, k := range set.Kinds() {
		sk, err := segment.ParseKind(k.String())
		if err != nil {
			sk = segment.Any
		}
		kinds[i] = sk
	}
	return kinds
}
