//go:build !linux

package loadtest

import (
	"errors"
	"time"
)

// PIDCPU needs /proc: elsewhere there are no per-process CPU figures.
func PIDCPU(pid int) (time.Duration, error) {
	return 0, errors.New("CPU time of another process: only on Linux")
}
