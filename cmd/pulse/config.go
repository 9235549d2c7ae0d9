package main

import (
	"fmt"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/system"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/validate"
)

// loadConfig reads FILE, or with an empty path the embedded e-commerce
// example (whose model files are unpacked under the data dir).
func loadConfig(path string) (*config.Config, error) {
	if path != "" {
		return config.Load(path)
	}
	return system.Example("")
}

func configError(err error) error {
	if errs, ok := config.AsErrors(err); ok {
		return fmt.Errorf("invalid config:\n%s", errs.Error())
	}
	return err
}

// checkConfig runs the checks config.Load cannot: features, segment rules
// and, through the scorer's own loader, the model files.
func checkConfig(cfg *config.Config, path string) config.Errors {
	return validate.Config(cfg, path, scorer.CheckModel)
}
