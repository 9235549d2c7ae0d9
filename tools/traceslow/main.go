// Command traceslow tells where the slow regions of an execution trace
// spent their time: for each region of one type (the scorer's "predict",
// written by `pulse loadtest predict -trace FILE`; the stream's "txn", by
// `pulse loadtest freshness -trace FILE`), how long its goroutine was
// running, waiting for a CPU (runnable), in a system call, or blocked (and
// on what: the reason, the library function and the innermost Pulse
// function). It prints that breakdown for all the regions and for the
// slowest 1%, so a tail can be told apart: coalescing waits, Redis round
// trips, the connection pool, a GC, or CPU. With -goroutines it also splits
// the whole trace of the goroutines running a given function (is the
// in-process broker's loop busy?).
//
//	cd tools/traceslow && go run . [-region predict|txn] [-goroutines FUNC] FILE
//
// It is a module of its own so that Pulse does not depend on
// golang.org/x/exp, whose trace reader it uses (the standard library's
// is internal).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

type tally map[string]time.Duration

type region struct {
	dur   time.Duration
	where tally
}

type goroutine struct {
	label string     // what it is doing now
	since trace.Time // since when
	open  bool       // inside a region of the type asked
	start trace.Time
	where tally
	match bool  // a stack of it held the function asked (-goroutines)
	life  tally // its whole time in the trace, by state
}

func main() {
	kind := flag.String("region", "predict", "region type to break down")
	fns := flag.String("goroutines", "", "also break down, over the whole trace, the time of the goroutines with a function whose name contains this on a stack (e.g. kfake.(*Cluster).run)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: traceslow [-region TYPE] [-goroutines FUNC] TRACE")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fail(err)
	}
	defer f.Close()
	regions, lives, err := read(f, *kind, *fns)
	if err != nil {
		fail(err)
	}
	report(os.Stdout, *kind, regions)
	if *fns != "" {
		breakdown(os.Stdout, fmt.Sprintf("goroutines in %s, whole trace", *fns), lives)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "traceslow:", err)
	os.Exit(1)
}

// read follows every goroutine's state through the trace and tallies, for
// each region of type kind, the time its goroutine spent in each state;
// lives are the whole-trace tallies of the goroutines that had a function
// whose name contains fns on a stack (none when fns is empty).
func read(r io.Reader, kind, fns string) (regions, lives []region, err error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, nil, err
	}
	gs := map[trace.GoID]*goroutine{}
	get := func(id trace.GoID) *goroutine {
		g := gs[id]
		if g == nil {
			g = &goroutine{label: "running"}
			gs[id] = g
		}
		return g
	}
	// advance counts g's time since its last event, in the state it was
	// in, for its open region and its whole-trace tally.
	advance := func(g *goroutine, t trace.Time) {
		d := time.Duration(t - g.since)
		if g.open {
			g.where[g.label] += d
		}
		if g.life != nil {
			g.life[g.label] += d
		}
		g.since = t
	}
	var out []region
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			if fns != "" {
				for _, g := range gs {
					if g.match {
						var d time.Duration
						for _, v := range g.life {
							d += v
						}
						lives = append(lives, region{dur: d, where: g.life})
					}
				}
			}
			return out, lives, nil
		}
		if err != nil {
			return nil, nil, err
		}
		switch ev.Kind() {
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			g := get(st.Resource.Goroutine())
			from, to := st.Goroutine()
			advance(g, ev.Time())
			if fns != "" {
				for fr := range st.Stack.Frames() {
					if !g.match && strings.Contains(fr.Func, fns) {
						g.match = true
					}
				}
				if g.life == nil && from != trace.GoNotExist && from != trace.GoUndetermined {
					g.life = tally{} // its state is known from here on
				}
			}
			g.label = label(to, st)
		case trace.EventRegionBegin:
			if ev.Region().Type != kind {
				continue
			}
			g := get(ev.Goroutine())
			advance(g, ev.Time())
			g.open, g.start, g.where = true, ev.Time(), tally{}
		case trace.EventRegionEnd:
			if ev.Region().Type != kind {
				continue
			}
			g := get(ev.Goroutine())
			if !g.open {
				continue // began before the trace did
			}
			advance(g, ev.Time())
			out = append(out, region{dur: time.Duration(ev.Time() - g.start), where: g.where})
			g.open = false
		}
	}
}

// label names a goroutine's new state: for a wait, its reason and the
// innermost function of ours it waits in.
func label(to trace.GoState, st trace.StateTransition) string {
	switch to {
	case trace.GoRunning:
		return "running"
	case trace.GoRunnable:
		return "runnable (waiting for a CPU)"
	case trace.GoSyscall:
		return "syscall" + at(st.Stack)
	case trace.GoWaiting:
		return "waiting: " + st.Reason + at(st.Stack)
	}
	return to.String()
}

// at names where a goroutine blocked: the innermost function outside the
// runtime and the standard library's sync, and the innermost of Pulse's
// when that is another (a library's wait called from Pulse).
func at(s trace.Stack) string {
	inner, ours := "", ""
	for f := range s.Frames() {
		name := f.Func[strings.LastIndex(f.Func, "/")+1:]
		if inner == "" && !strings.HasPrefix(f.Func, "runtime.") && !strings.HasPrefix(f.Func, "sync.") && !strings.HasPrefix(f.Func, "internal/") {
			inner = name
		}
		if strings.Contains(f.Func, "pulse-rt/pulse/") {
			ours = name
			break
		}
	}
	switch {
	case inner == "" && ours == "":
		return ""
	case inner == ours || inner == "":
		return " in " + ours
	case ours == "":
		return " in " + inner
	}
	return " in " + inner + " from " + ours
}

func report(w io.Writer, kind string, rs []region) {
	if len(rs) == 0 {
		fmt.Fprintf(w, "no %q regions\n", kind)
		return
	}
	slices.SortFunc(rs, func(a, b region) int { return int(a.dur - b.dur) })
	q := func(p float64) time.Duration { return rs[min(len(rs)-1, int(p*float64(len(rs))))].dur }
	fmt.Fprintf(w, "%d %q regions: p50 %v p99 %v p99.9 %v max %v\n", len(rs), kind, q(0.5), q(0.99), q(0.999), rs[len(rs)-1].dur)
	cut := len(rs) * 99 / 100
	breakdown(w, "all", rs)
	breakdown(w, "slowest 1%", rs[cut:])
}

// breakdown prints the mean time per region in each state, largest first.
func breakdown(w io.Writer, name string, rs []region) {
	sum := tally{}
	var total time.Duration
	for _, r := range rs {
		for k, d := range r.where {
			sum[k] += d
		}
		total += r.dur
	}
	keys := make([]string, 0, len(sum))
	for k := range sum {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return int(sum[b] - sum[a]) })
	if len(rs) == 0 || total == 0 {
		fmt.Fprintf(w, "\n%s: none\n", name)
		return
	}
	fmt.Fprintf(w, "\n%s (%d regions, mean %v):\n", name, len(rs), total/time.Duration(len(rs)))
	for _, k := range keys {
		if sum[k] < total/1000 {
			continue
		}
		fmt.Fprintf(w, "  %5.1f%%  %10v  %s\n", 100*float64(sum[k])/float64(total), sum[k]/time.Duration(len(rs)), k)
	}
}
