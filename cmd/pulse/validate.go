package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/system"
)

func runValidate(args []string) error {
	fl := flag.NewFlagSet("validate", flag.ExitOnError)
	path := fl.String("config", "", "config file to check (default pulse.yaml, else the config of the pulse dev running here)")
	fl.Parse(args)
	p, err := validatePath(*path)
	if err != nil {
		return err
	}
	var cfg *config.Config
	if p == "" {
		p = "the embedded example config"
		cfg, err = system.Example("")
	} else {
		cfg, err = config.Load(p)
	}
	errs, ok := config.AsErrors(err)
	if err != nil && !ok {
		return err
	}
	if err == nil {
		errs = checkConfig(cfg, p)
	}
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Println(e.String())
		}
		return fmt.Errorf("%d problem(s) in %s", len(errs), p)
	}
	fmt.Printf("%s: ok (%d features, %d segments, %d models, %d keys)\n", p, len(cfg.Features), len(cfg.Segments), len(cfg.Models), len(cfg.Keys))
	return nil
}

// validatePath is the file validate checks: -config, else pulse.yaml here,
// else the config of the pulse dev running on ./pulse-data ("" for the
// embedded example it may run).
func validatePath(flagPath string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	if _, err := os.Stat("pulse.yaml"); !errors.Is(err, fs.ErrNotExist) {
		return "pulse.yaml", nil
	}
	st, err := system.ReadDevState("pulse-data")
	if err != nil {
		return "", err
	}
	if st == nil {
		return "", errors.New("no pulse.yaml here and no pulse dev running here: pass the config to check with -config FILE")
	}
	return st.Config, nil
}
