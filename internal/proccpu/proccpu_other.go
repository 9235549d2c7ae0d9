//go:build !linux

package proccpu

import (
	"errors"
	"time"
)

// Of needs /proc: elsewhere there are no per-process CPU figures.
func Of(pid int) (time.Duration, error) {
	return 0, errors.New("CPU time of another process: only on Linux")
}

// Listening needs /proc too.
func Listening(port int) (int, error) {
	return 0, errors.New("the process listening on a port: only on Linux")
}
