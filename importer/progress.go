package importer

import (
	"fmt"
	"sort"
	"time"
)

// progress prints a line a second to o.Progress until the returned stop:
// rows, rows/s and, from the bytes of the current file read, its share
// done and the time left. On a terminal the line is rewritten in place.
func (im *run) progress() (stop func()) {
	if im.o.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				if im.o.Terminal {
					fmt.Fprintf(im.o.Progress, "\r%s\033[K\n", im.line())
				}
				return
			case <-t.C:
				if im.o.Terminal {
					fmt.Fprintf(im.o.Progress, "\r%s\033[K", im.line())
				} else {
					fmt.Fprintln(im.o.Progress, im.line())
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (im *run) line() string {
	el := time.Since(im.start)
	rows := im.rows.Load()
	rate := float64(rows) / el.Seconds()
	s := fmt.Sprintf("import: %d rows, %.0f rows/s, %d refused", rows, rate, im.refused.Load())
	if f := im.cur.Load(); f != nil && f.size > 0 {
		read := f.read.Load()
		share := float64(read) / float64(f.size)
		s += fmt.Sprintf(", %s %.0f%%", f.name, 100*share)
		if share > 0 && share < 1 {
			// The share of this file is the best clock there is: its
			// bytes, compressed or not, are read at the pace of its rows.
			left := time.Duration(float64(el) * (1 - share) / share)
			s += fmt.Sprintf(", ETA %s", left.Round(time.Second))
		}
	}
	return s
}

func sortStrings(s []string) { sort.Strings(s) }
