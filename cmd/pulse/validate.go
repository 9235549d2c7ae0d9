package main

import (
	"errors"
	"flag"
	"fmt"
	"sort"

	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/segment"
)

func runValidate(args []string) error {
	fl := flag.NewFlagSet("validate", flag.ExitOnError)
	path := fl.String("config", "pulse.yaml", "config file to check")
	fl.Parse(args)
	cfg, err := config.Load(*path)
	if err != nil {
		if errs, ok := config.AsErrors(err); ok {
			for _, p := range errs {
				fmt.Println(p.String())
			}
			return fmt.Errorf("%d problem(s) in %s", len(errs), *path)
		}
		return err
	}
	if errs := checkConfig(cfg, *path); len(errs) > 0 {
		for _, p := range errs {
			fmt.Println(p.String())
		}
		return fmt.Errorf("%d problem(s) in %s", len(errs), *path)
	}
	fmt.Printf("%s: ok (%d features, %d segments, %d models, %d keys)\n", *path, len(cfg.Features), len(cfg.Segments), len(cfg.Models), len(cfg.Keys))
	return nil
}

// checkConfig runs the checks that need the pure packages: feature
// expressions and filters, segment rules against the features' types, and
// model files against their configured inputs.
func checkConfig(cfg *config.Config, file string) config.Errors {
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
			errs = append(errs, checkSegments(cfg, entity, set.Names(), SegmentKinds(set), file)...)
			continue
		}
		// The features did not compile: still check the rules' names,
		// with every feature's type unknown.
		errs = append(errs, checkSegments(cfg, entity, names, make([]segment.Kind, len(names)), file)...)
	}
	for _, s := range cfg.Segments {
		if entities[s.Entity] == nil {
			errs = append(errs, config.Problem{File: file, Line: s.Line, Path: "segments[" + s.Name + "].entity", Msg: fmt.Sprintf("no features are defined for entity %q", s.Entity)})
		}
	}
	for _, m := range cfg.Models {
		// The scorer's own check: format, feature count and order, labels.
		if err := scorer.CheckModel(cfg, m); err != nil {
			errs = append(errs, config.Problem{File: file, Line: m.Line, Path: "models[" + m.Name + "]", Msg: err.Error()})
		}
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
	return errs
}

func checkSegments(cfg *config.Config, entity string, names []string, kinds []segment.Kind, file string) config.Errors {
	segs := segment.ForEntity(cfg.Segments, entity)
	if len(segs) == 0 {
		return nil
	}
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
