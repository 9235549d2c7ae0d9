package backfill

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progress prints a one-line status to w every second (rewritten in place
// on a terminal) and a final line at done.
type progress struct {
	w     io.Writer
	what  string
	start time.Time
	tty   bool
	stop  chan struct{}
	wg    sync.WaitGroup

	mu     sync.Mutex
	status func() string
}

func newProgress(w io.Writer, what string, status func() string) *progress {
	p := &progress{w: w, what: what, start: time.Now(), stop: make(chan struct{}), status: status}
	if w == nil {
		return p
	}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.print(false)
			}
		}
	}()
	return p
}

func (p *progress) print(final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	line := fmt.Sprintf("%s: %s (%s)", p.what, p.status(), time.Since(p.start).Round(100*time.Millisecond))
	switch {
	case p.tty && final:
		fmt.Fprintf(p.w, "\r\033[K%s\n", line)
	case p.tty:
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	default:
		fmt.Fprintln(p.w, line)
	}
}

func (p *progress) done() {
	if p.w == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
	p.print(true)
}
