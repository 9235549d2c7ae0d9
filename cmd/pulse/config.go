package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/examples"
)

// loadConfig reads FILE, or with an empty path the embedded e-commerce
// example (whose model files are unpacked under the data dir).
func loadConfig(path string) (*config.Config, error) {
	if path != "" {
		return config.Load(path)
	}
	data, err := examples.Ecommerce.ReadFile("ecommerce/pulse.yaml")
	if err != nil {
		return nil, err
	}
	cfg, err := config.Parse(data, "examples/ecommerce/pulse.yaml (embedded)")
	if err != nil {
		return nil, err
	}
	// Relative paths in the embedded config resolve against a copy of its
	// folder in the data dir.
	dir, err := filepath.Abs(filepath.Join(cfg.DataDir, "example"))
	if err != nil {
		return nil, err
	}
	if err := unpack(dir); err != nil {
		return nil, fmt.Errorf("cannot unpack the example config: %w", err)
	}
	cfg.Dir = dir
	return cfg, nil
}

func unpack(dir string) error {
	sub, err := fs.Sub(examples.Ecommerce, "ecommerce")
	if err != nil {
		return err
	}
	return fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, p)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
}
