package proccpu

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func self() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestOfFollowsThisProcess(t *testing.T) {
	before, err := Of(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin for 300 ms of CPU: /proc counts in 10 ms ticks.
	for start := self(); self()-start < 300*time.Millisecond; {
	}
	after, err := Of(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d := after - before; d < 250*time.Millisecond || d > 5*time.Second {
		t.Fatalf("/proc says %v of CPU for a 300 ms spin", d)
	}
}

func TestListeningFindsThisProcess(t *testing.T) {
	// The second listens on every address: the tcp6 table where the
	// machine has IPv6, as a broker's "PLAINTEXT://:9092" does.
	for _, network := range []string{"127.0.0.1:0", ":0"} {
		l, err := net.Listen("tcp", network)
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		pid, err := Listening(port)
		if err != nil || pid != os.Getpid() {
			t.Fatalf("%s port %d: pid %d, %v; want %d", network, port, pid, err, os.Getpid())
		}
		l.Close()
		if pid, err := Listening(port); err == nil {
			t.Fatalf("%s port %d closed, still found pid %d", network, port, pid)
		}
	}
}
