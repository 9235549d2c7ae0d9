package stream

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/model"
	"github.com/twmb/franz-go/pkg/kgo"
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
	_, err := st.task.rfmTick(context.Background())
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

// describeAuto says what an entity's automatic record holds.
func (st *tester) describeAuto(k string, v []byte) string {
	rec, err := decodeAutoRecord(v)
	if err != nil {
		return k + ": " + err.Error()
	}
	var b strings.Builder
	b.WriteString(k)
	if st.p.rfm != nil {
		changed := "never"
		if rec.changedAt != 0 {
			changed = testTimeString(time.UnixMilli(rec.changedAt))
		}
		fmt.Fprintf(&b, " group=%s previous=%s changed=%s rfm=%d,%d,%d", rec.group, rec.previous, changed, rec.rfm[0], rec.rfm[1], rec.rfm[2])
	}
	for i, s := range rec.scores {
		fmt.Fprintf(&b, " %s=%.4g", st.p.traits[i].name, s)
	}
	return b.String()
}

// describeTrait is one line for a traits-topic record.
func (st *tester) describeTrait(r *kgo.Record) string {
	ts, err := model.DecodeTraitScore(r.Value)
	if err != nil {
		return "trait: " + err.Error()
	}
	score := "null"
	if ts.Score != nil {
		score = fmt.Sprintf("%.4g", *ts.Score)
	}
	if ts.Previous != nil {
		score += fmt.Sprintf(" previous=%.4g", *ts.Previous)
	}
	return fmt.Sprintf("trait %s %s %s=%s model=%s at=%s", ts.Entity, ts.ID, ts.Trait, score, ts.Model, testTimeString(ts.At))
}
