//go:build !linux

package loadtest

import (
	"errors"
	"time"
)

type timerSleeper struct{}

func newTimerSleeper() (*timerSleeper, error) { return nil, errors.New("no timerfd") }

func (s *timerSleeper) until(t time.Time) {}

func (s *timerSleeper) close() {}

func lowTimerSlack() (restore func()) { return func() {} }
