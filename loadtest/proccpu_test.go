package loadtest

import (
	"os"
	"testing"
	"time"
)

func TestPIDCPUFollowsThisProcess(t *testing.T) {
	before, err := PIDCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin for 300 ms of CPU: /proc counts in 10 ms ticks.
	for start := processCPU(); processCPU()-start < 300*time.Millisecond; {
	}
	after, err := PIDCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d := after - before; d < 250*time.Millisecond || d > 5*time.Second {
		t.Fatalf("/proc says %v of CPU for a 300 ms spin", d)
	}
}
