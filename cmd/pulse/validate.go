package main

import (
	"flag"
	"fmt"

	"github.com/pulse-rt/pulse/config"
)

func runValidate(args []string) error {
	fl := flag.NewFlagSet("validate", flag.ExitOnError)
	path := fl.String("config", "pulse.yaml", "config file to check")
	fl.Parse(args)
	cfg, err := config.Load(*path)
	errs, ok := config.AsErrors(err)
	if err != nil && !ok {
		return err
	}
	if err == nil {
		errs = checkConfig(cfg, *path)
	}
	if len(errs) > 0 {
		for _, p := range errs {
			fmt.Println(p.String())
		}
		return fmt.Errorf("%d problem(s) in %s", len(errs), *path)
	}
	fmt.Printf("%s: ok (%d features, %d segments, %d models, %d keys)\n", *path, len(cfg.Features), len(cfg.Segments), len(cfg.Models), len(cfg.Keys))
	return nil
}
