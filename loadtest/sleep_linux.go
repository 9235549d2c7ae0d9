package loadtest

import (
	"syscall"
	"time"
)

// sleepUntil waits until t with nanosleep(2). time.Sleep rides the
// runtime's timers, which here wake up to ~1 ms late; an open-loop
// generator that sends late adds that to every latency it records (from the
// scheduled time), so it would measure itself rather than the server. A
// nanosleep also ends up to the thread's timer slack late (50 µs unless
// lowered: see lowTimerSlack).
func sleepUntil(t time.Time) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(int64(d))
		_ = syscall.Nanosleep(&ts, nil)
	}
}
