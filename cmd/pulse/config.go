package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/system"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/pulse-rt/pulse/validate"
)

// command is a command's flag set with its -config flag.
type command struct {
	*flag.FlagSet
	config string
}

// newCommand makes the flag set of `pulse NAME`, whose -config defaults to
// path ("": the embedded e-commerce example).
func newCommand(name, path string) *command {
	c := &command{FlagSet: flag.NewFlagSet(name, flag.ExitOnError)}
	help := "config file"
	if path == "" {
		help += " (default: the embedded e-commerce example)"
	}
	c.StringVar(&c.config, "config", path, help)
	return c
}

// load parses args and loads the config.
func (c *command) load(args []string) (*config.Config, error) {
	c.Parse(args)
	cfg, err := loadConfig(c.config)
	if err != nil {
		return nil, configError(err)
	}
	return cfg, nil
}

// loadConfig reads FILE, or with an empty path the embedded e-commerce
// example (whose model files are unpacked under the data dir).
func loadConfig(path string) (*config.Config, error) {
	if path != "" {
		return config.Load(path)
	}
	return system.Example("")
}

// loadBeside loads the config of a command that runs beside `pulse dev`
// (import, backfill): system.LoadBeside, its errors worded as load's.
func loadBeside(path string) (*config.Config, *system.DevState, error) {
	cfg, st, err := system.LoadBeside(path)
	if err != nil {
		return nil, nil, configError(err)
	}
	return cfg, st, nil
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

// run starts parts of Pulse on cfg in one system, in order, and waits
// until ctx ends or a part fails.
func run(ctx context.Context, cfg *config.Config, start ...func(*system.System) error) error {
	sys := system.New(ctx, cfg, slog.Default())
	defer sys.Close()
	for _, f := range start {
		if err := f(sys); err != nil {
			return err
		}
	}
	return sys.Wait()
}

// parseInterspersed parses args whose flags may come after the positional
// arguments (pulse import rows FILE -feature-set NAME), and returns those
// in order. "--" ends the flags.
func (c *command) parseInterspersed(args []string) []string {
	var pos []string
	for {
		c.Parse(args)
		rest := c.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...)
		}
		if len(rest) == 0 {
			return pos
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
