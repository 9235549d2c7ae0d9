package system

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/examples"
)

// Example is the embedded e-commerce example config (`pulse dev` with no
// -config, `loadtest predict -embedded`), its files (the models) unpacked
// under dir, against which its relative paths resolve; with dir "", under
// the config's data dir, in example/.
func Example(dir string) (*config.Config, error) {
	data, err := examples.Ecommerce.ReadFile("ecommerce/pulse.yaml")
	if err != nil {
		return nil, err
	}
	cfg, err := config.Parse(data, "examples/ecommerce/pulse.yaml (embedded)")
	if err != nil {
		return nil, err
	}
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "example")
	}
	if dir, err = filepath.Abs(dir); err != nil {
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
