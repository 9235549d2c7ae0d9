package history

import (
	"context"
	"net"
	"syscall"
	"testing"
)

// The local server of `pulse dev` runs in a process group of its own, so
// a Ctrl-C at the terminal does not kill it before pulse dev has stopped
// the writer that feeds it; it answers, and Stop ends it.
func TestLocalServerOwnProcessGroup(t *testing.T) {
	free := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	s, err := StartLocal(context.Background(), t.TempDir(), free(), free())
	if err != nil {
		t.Fatalf("StartLocal: %v (make test installs clickhouse-server)", err)
	}
	defer s.Stop()
	pgid, err := syscall.Getpgid(s.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if pgid == syscall.Getpgrp() || pgid != s.cmd.Process.Pid {
		t.Fatalf("clickhouse-server is in process group %d, pulse's is %d: a Ctrl-C would reach it", pgid, syscall.Getpgrp())
	}
	s.Stop()
	select {
	case <-s.done:
	default:
		t.Fatal("Stop returned with the server running")
	}
}
