package testenv

import "syscall"

// sysProcAttr puts a server in its own process group, so a terminal's ^C reaches
// only the test binary which then stops it, and asks the kernel to SIGKILL it
// when the thread that started it dies. spawn starts every server from one
// locked thread that lives as long as the process, so a crashed or killed test
// binary never leaves a server behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
