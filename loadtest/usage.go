package loadtest

import (
	"runtime/metrics"
	"time"

	"github.com/pulse-rt/pulse/internal/proccpu"
)

// CPUSource reads the CPU time a process outside this one has used so far
// (the ingest server, the broker, redis-server), to report it next to this
// process's.
type CPUSource struct {
	Name string
	Read func() (time.Duration, error)
}

// PIDSource is the CPUSource of a local process, read from /proc.
func PIDSource(name string, pid int) CPUSource {
	return CPUSource{Name: name, Read: func() (time.Duration, error) { return proccpu.Of(pid) }}
}

// Usage is what a phase cost: the CPU time of this process and of the
// watched processes, and this process's garbage. On a machine shared with
// other work, CPU and bytes per request are the steadier figures where
// latency and throughput move with the neighbours.
type Usage struct {
	Self   time.Duration   // this process: the load generator, and any server run in it
	Others []time.Duration // one per CPUSource; -1 when one could not be read
	Alloc  uint64          // bytes allocated in this process
	GCs    uint64          // garbage collections in this process
}

// readUsage is the usage so far.
func readUsage(sources []CPUSource) Usage {
	u := Usage{Self: processCPU(), Others: make([]time.Duration, len(sources))}
	for i, s := range sources {
		d, err := s.Read()
		if err != nil {
			d = -1
		}
		u.Others[i] = d
	}
	m := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(m)
	u.Alloc, u.GCs = m[0].Value.Uint64(), m[1].Value.Uint64()
	return u
}

// measure runs phase and adds what it used to *u.
func measure[R any](u *Usage, sources []CPUSource, phase func() R) R {
	before := readUsage(sources)
	r := phase()
	after := readUsage(sources)
	u.Self += after.Self - before.Self
	u.Alloc += after.Alloc - before.Alloc
	u.GCs += after.GCs - before.GCs
	if u.Others == nil {
		u.Others = make([]time.Duration, len(sources))
	}
	for i := range sources {
		if before.Others[i] < 0 || after.Others[i] < 0 || u.Others[i] < 0 {
			u.Others[i] = -1
			continue
		}
		u.Others[i] += after.Others[i] - before.Others[i]
	}
	return r
}
