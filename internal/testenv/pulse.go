package testenv

import (
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BuildPulse builds the pulse command into a test temp dir and returns the
// binary's path, for tests that run a service as a separate process (to
// kill it).
func BuildPulse(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pulse")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/pulse-rt/pulse/cmd/pulse").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// FreeAddr returns a loopback address nothing listens on, for a child
// process to listen on (FreePort).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// WaitFor polls cond every 20 ms until it holds, failing the test with
// what when it has not within d.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
