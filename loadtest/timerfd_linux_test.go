package loadtest

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The timer never wakes the scheduler before a request is due (a request
// sent early would have its latency understated), and it wakes it within
// reach of the due time.
func TestTimerSleeperNeverEarly(t *testing.T) {
	ts, err := newTimerSleeper()
	if err != nil {
		t.Fatal(err)
	}
	defer ts.close()
	start := time.Now()
	for i := 1; i <= 500; i++ {
		due := start.Add(time.Duration(i) * 200 * time.Microsecond)
		ts.until(due)
		if d := time.Since(due); d < 0 {
			t.Fatalf("sleep %d ended %s early", i, -d)
		}
	}
	// 100ms of sleeps: a generous bound only catches sleeps that do not
	// end at all near their time (a busy machine delays them some).
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("500 sleeps of 200 µs took %s", took)
	}
}

func TestLowTimerSlack(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		t.Fatal("PR_GET_TIMERSLACK:", err)
	}
	restore := lowTimerSlack()
	if got, _ := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); got != 1 {
		t.Errorf("timer slack %d ns, want 1", got)
	}
	restore()
	if got, _ := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); got != before {
		t.Errorf("timer slack %d ns after restore, want %d", got, before)
	}
}
