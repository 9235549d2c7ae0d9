package loadtest

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// timerSleeper sleeps on a timerfd that Go's network poller watches:
// while it sleeps, the goroutine holds no thread and no P, so a server in
// the same process (an embedded scorer, the bare handler) has both cores;
// the poller's epoll wakes at the timer's nanosecond, unlike Go's own
// timers, which it rounds up to the millisecond (see sleepUntil).
type timerSleeper struct {
	f  *os.File
	fd int
}

func newTimerSleeper() (*timerSleeper, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	// A non-blocking descriptor: os.NewFile registers it with the poller.
	return &timerSleeper{f: os.NewFile(uintptr(fd), "timerfd"), fd: fd}, nil
}

// until waits until t.
func (s *timerSleeper) until(t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	if err := unix.TimerfdSettime(s.fd, 0, &spec, nil); err != nil {
		sleepUntil(t)
		return
	}
	var buf [8]byte
	if _, err := s.f.Read(buf[:]); err != nil {
		sleepUntil(t)
	}
}

func (s *timerSleeper) close() { s.f.Close() }

// lowTimerSlack makes this thread's timers fire on time and returns what
// undoes it: a thread's nanosleep may end up to its timer slack late, 50
// µs by default, which an open loop at 10k/s would add to every latency.
func lowTimerSlack() (restore func()) {
	old, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return func() {}
	}
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0); err != nil {
		return func() {}
	}
	return func() { _ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(old), 0, 0, 0) }
}
