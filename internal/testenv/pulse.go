package testenv

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BuildPulse builds the pulse command, once per test binary, into the
// directory Main removes, and returns the binary's path, for tests that
// run a service as a separate process (to kill it). Nothing may write to
// the binary: the package's tests share it.
func BuildPulse(t testing.TB) string {
	t.Helper()
	pulseBin.once.Do(func() {
		dir, err := sharedDir("bin")
		if err != nil {
			pulseBin.err = err
			return
		}
		bin := filepath.Join(dir, "pulse")
		if out, err := exec.Command("go", "build", "-o", bin, "github.com/pulse-rt/pulse/cmd/pulse").CombinedOutput(); err != nil {
			pulseBin.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		pulseBin.path = bin
	})
	if pulseBin.err != nil {
		t.Fatal(pulseBin.err)
	}
	return pulseBin.path
}

// pulseBin is the binary BuildPulse built for this test binary (each link
// of it took ~5 s, and a package's tests asked for it a dozen times).
var pulseBin struct {
	once sync.Once
	path string
	err  error
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
