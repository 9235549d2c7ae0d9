//go:build !unix

package loadtest

import "time"

// processCPU is 0 where getrusage is missing: no CPU figures in reports.
func processCPU() time.Duration { return 0 }
