package system

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
)

// DevStateFile is the file under the data dir where a running `pulse dev`
// says what it runs, for the commands run beside it (pulse import,
// backfill, validate) to find.
const DevStateFile = "dev.json"

// DevState is what a running `pulse dev` runs.
type DevState struct {
	PID int `json:"pid"`
	// Config is the absolute path of its config file; "" for the embedded
	// example.
	Config     string   `json:"config"`
	Kafka      []string `json:"kafka"`
	ClickHouse string   `json:"clickhouse,omitempty"` // native address; "" when history is off
	Database   string   `json:"clickhouse_database,omitempty"`
	Ingest     string   `json:"ingest"`
	Scorer     string   `json:"scorer"`
	Store      string   `json:"store"` // the online store's Pebble path, locked while dev runs
}

// writeDevState writes st to dataDir/dev.json; remove deletes it (when it
// is still this process's).
func writeDevState(dataDir string, st DevState) (remove func(), err error) {
	path := filepath.Join(dataDir, DevStateFile)
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot write %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("cannot write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("cannot write %s: %w", path, err)
	}
	return func() {
		if cur, err := ReadDevState(dataDir); err == nil && cur != nil && cur.PID == st.PID {
			os.Remove(path)
		}
	}, nil
}

// ReadDevState reads the state of the `pulse dev` running on dataDir: nil
// when there is none, or its process is gone (a dev killed by SIGKILL
// leaves its file behind).
func ReadDevState(dataDir string) (*DevState, error) {
	path := filepath.Join(dataDir, DevStateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	var st DevState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("cannot read %s: %w (delete it if no pulse dev runs)", path, err)
	}
	if !alive(st.PID) {
		return nil, nil
	}
	return &st, nil
}

// alive reports whether a process pid runs.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Apply points cfg at what this dev runs: its brokers, and its ClickHouse
// when cfg names none (dev starts a local one then).
func (st *DevState) Apply(cfg *config.Config) {
	if len(st.Kafka) > 0 {
		cfg.Kafka.Brokers = st.Kafka
	}
	if cfg.ClickHouse.Addr == "" && st.ClickHouse != "" {
		cfg.ClickHouse.Addr = st.ClickHouse
		if st.Database != "" {
			cfg.ClickHouse.Database = st.Database
		}
	}
}

// LoadBeside loads the config a command runs with, finding a running
// `pulse dev`: with a path, that file, pointed at the dev running on its
// data dir if any; without, the config of the dev running on ./pulse-data
// (the default data dir, where `pulse dev` was started), else the embedded
// example. The state is nil when no dev runs there.
func LoadBeside(path string) (*config.Config, *DevState, error) {
	var cfg *config.Config
	var err error
	if path != "" {
		if cfg, err = config.Load(path); err != nil {
			return nil, nil, err
		}
	} else {
		st, err := ReadDevState("pulse-data")
		if err != nil {
			return nil, nil, err
		}
		if st != nil && st.Config != "" {
			cfg, err = config.Load(st.Config)
		} else {
			cfg, err = Example("")
		}
		if err != nil {
			return nil, nil, err
		}
	}
	st, err := ReadDevState(cfg.DataDir)
	if err != nil {
		return nil, nil, err
	}
	if st != nil {
		st.Apply(cfg)
	}
	return cfg, st, nil
}
