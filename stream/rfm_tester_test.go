package stream

import (
	"context"
	"fmt"
	"strings"
)

// rfmCommand is the tester's "rfm": one pass of the timer loop's RFM work
// (rfmTick), partition 0 publishing the boundaries from its own summary.
func (st *tester) rfmCommand(c testCase, fail func(error) string) string {
	var b strings.Builder
	point := c.args["crash"]
	if n, ok := c.args["chunk"]; ok {
		fmt.Sscan(n, &st.p.opts.TimerChunk)
	}
	st.p.opts.hook = func(at string, _ int32) error {
		if at == point {
			return fmt.Errorf("crash at %s", at)
		}
		return nil
	}
	st.task.rfmNextPublish = st.clock.now() // publish on every command
	before := st.p.rfmLatest.Load()
	err := st.task.rfmTick(context.Background())
	st.p.opts.hook = nil
	if b2 := st.p.rfmLatest.Load(); b2 != nil && b2 != before {
		fmt.Fprintf(&b, "boundaries v%d buyers=%d r=%v f=%v m=%v\n", b2.Version, b2.Buyers, b2.R, b2.F, b2.M)
	}
	if point != "" && err != nil {
		fmt.Fprintf(&b, "error: %v\n", err)
		st.written(&b, false)
		if err := st.reopen(&b); err != nil {
			return fail(err)
		}
		return b.String()
	}
	if err != nil {
		return fail(err)
	}
	st.written(&b, false)
	if b.Len() == 0 {
		return "nothing to do"
	}
	return b.String()
}
