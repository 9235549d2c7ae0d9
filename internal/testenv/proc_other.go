//go:build !linux

package testenv

import "syscall"

// sysProcAttr has no parent-death signal outside Linux: Main stops what was
// started, and a crashed test binary may leave servers running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
