package stream

import (
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/rfm"
	"github.com/pulse-rt/pulse/segment"
)

// auto is a task's state for the automatic features: traits (traits.go)
// and RFM (rfm.go, rfm_rescore.go, rfm_topic.go).
type auto struct {
	traitSc traitScratch
	// rfmB is the boundaries version the task scores with; rfmVals is
	// rfmDue's scratch; rfmNextPublish when publishRFM runs next.
	rfmB           *rfm.Boundaries
	rfmVals        []any
	rfmNextPublish time.Time
}

// withAuto appends the automatic features' names and kinds
// (config.AutoFeatures) to the configured ones.
func withAuto(cfg *config.Config, names []string, kinds []segment.Kind) ([]string, []segment.Kind) {
	names = append([]string(nil), names...)
	for _, f := range cfg.AutoFeatures(entity) {
		k, _ := segment.ParseKind(f.Kind)
		names, kinds = append(names, f.Name), append(kinds, k)
	}
	return names, kinds
}

// appendAuto appends to the feature values of e (as of now) its trait
// scores and RFM features, in config.AutoFeatures order. With x it writes
// what changed (the RFM record).
func (t *task) appendAuto(x *txn, e *entry, vals []any, now time.Time) ([]any, error) {
	n := len(vals)
	for i := range t.p.traits {
		vals = append(vals, t.p.traits[i].score(vals[:n], &t.traitSc))
	}
	if t.p.rfm == nil {
		return vals, nil
	}
	return t.appendRFM(x, e, vals, now)
}

func (p *Processor) closeRFM() {
	if p.rfmTopic.cl != nil {
		p.rfmTopic.cl.Close()
	}
}
