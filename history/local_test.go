package history

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The local server of `pulse dev` runs in a process group of its own, so
// a Ctrl-C at the terminal does not kill it before pulse dev has stopped
// the writer that feeds it; it answers, and Stop ends it.
func TestLocalServerOwnProcessGroup(t *testing.T) {
	free := func() int {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The ports are free when picked, but the parallel suite may take one
	// before the server binds it: then it exits at start saying so, and
	// the test picks again.
	var s *LocalServer
	var err error
	for try := 0; try < 3; try++ {
		s, err = StartLocal(context.Background(), t.TempDir(), free(), free())
		if err == nil || !strings.Contains(err.Error(), "Address already in use") {
			break
		}
		t.Logf("try %d: %v", try+1, err)
	}
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

// TestLogTail: an error that names a server's log carries its end, on one
// line, since a test's directory is gone by the time anyone reads it.
func TestLogTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "err.log")
	if err := os.WriteFile(path, []byte(strings.Repeat("early line\n", 100)+"<Error> Application: Net Exception: Address already in use: 127.0.0.1:9000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := logTail(path, 80)
	if !strings.HasSuffix(got, "Address already in use: 127.0.0.1:9000") || strings.Contains(got, "\n") || len(got) > 80 {
		t.Fatalf("logTail = %q, want the log's last 80 bytes on one line", got)
	}
	if got := logTail(filepath.Join(t.TempDir(), "none.log"), 80); !strings.HasPrefix(got, "(unreadable: ") {
		t.Fatalf("logTail of no file = %q", got)
	}
}
