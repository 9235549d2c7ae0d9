package stream

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/pulse-rt/pulse/model"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/rfm"
	"github.com/pulse-rt/pulse/segment"
)

// auto is a task's state for the automatic features: traits (traits.go)
// and RFM (rfm.go, rfm_rescore.go, rfm_topic.go).
type auto struct {
	traitSc traitScratch
	// rfmB is the boundaries version the task scores with;
	// rfmNextPublish when publishRFM runs next; rfmSearches counts
	// rfmDue's searches (tests).
	rfmB           *rfm.Boundaries
	rfmNextPublish time.Time
	rfmSearches    int
	// rescoreCommit is how long the last re-score chunk's commit took
	// (rfm_rescore.go).
	rescoreCommit time.Duration
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
// scores and RFM features, in config.AutoFeatures order. With x it takes
// what changed: e.autoRec becomes the new record (finish writes it in the
// entity's value), with a traits-topic record per trait whose score
// changed. Without x (rewritePending) nothing is.
func (t *task) appendAuto(x *txn, e *entry, vals []any, now time.Time) ([]any, error) {
	vals, rec, err := t.autoValues(e, vals, now)
	if err != nil || x == nil || rec.equal(&e.autoRec) {
		return vals, err
	}
	if err := t.writeTraits(x, e, &rec, now); err != nil {
		return nil, err
	}
	e.autoRec = rec
	return vals, nil
}

// hasAuto reports that the config has automatic features: entity values
// carry an automatic record.
func (p *Processor) hasAuto() bool { return len(p.traits) > 0 || p.rfm != nil }

// autoValues appends e's automatic features to vals and returns the
// automatic record they make (e.autoRec when nothing changed).
func (t *task) autoValues(e *entry, vals []any, now time.Time) ([]any, autoRecord, error) {
	if len(t.p.traits) == 0 && t.p.rfm == nil {
		return vals, e.autoRec, nil
	}
	if !e.autoLoaded {
		rec, err := t.autoOf(e.id)
		if err != nil {
			return nil, autoRecord{}, err
		}
		e.setLegacyAuto(rec)
	}
	rec := e.autoRec
	rec.scores = make([]float64, len(t.p.traits))
	n := len(vals)
	for i := range t.p.traits {
		v := t.p.traits[i].score(vals[:n], &t.traitSc)
		vals = append(vals, v)
		rec.scores[i] = math.NaN()
		if f, ok := v.(float64); ok {
			rec.scores[i] = f
		}
	}
	if t.p.rfm != nil {
		vals = t.appendRFM(e, &rec, vals, now)
	}
	if e.st.Empty() {
		rec = autoRecord{} // the entity is deleted: so is its record
	}
	return vals, rec, nil
}

// writeTraits adds a traits-topic record for each trait whose score in rec
// differs from the committed one.
func (t *task) writeTraits(x *txn, e *entry, rec *autoRecord, now time.Time) error {
	topic := t.p.cfg.Kafka.Topics.Traits
	if topic == "" || len(rec.scores) == 0 {
		return nil
	}
	at := changeTime(e, now)
	for i := range t.p.traits {
		s, prev := rec.scores[i], math.NaN()
		if i < len(e.autoRec.scores) {
			prev = e.autoRec.scores[i]
		}
		if i < len(e.autoRec.scores) && sameScore(prev, s) {
			continue
		}
		tr := &t.p.traits[i]
		ts := model.TraitScore{ChangeID: model.TraitChangeID(tr.name, entity, e.id, at, s), Trait: tr.name,
			Model: tr.model, Version: tr.version, Entity: entity, ID: e.id, At: at.UTC()}
		if !math.IsNaN(s) {
			ts.Score = &s
		}
		if !math.IsNaN(prev) {
			ts.Previous = &prev
		}
		b, err := ts.Encode()
		if err != nil {
			return err
		}
		x.recs = append(x.recs, &kgo.Record{Topic: topic, Key: []byte(e.id), Value: b})
	}
	return nil
}

func sameScore(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }

// autoRecord is what an entity keeps of its automatic features: the RFM
// group, the previous group and when it changed, and the traits' last
// scores (NaN: none), for the traits topic's "as scores change". It is
// part of the entity's value (entityValue), so it costs no key, record or
// read of its own. Values written before that kept it apart, under Pebble
// r/<id> and changelog __auto/<id>: it is read from there once (autoOf,
// the re-score's walk) and deleted when the entity is next written.
type autoRecord struct {
	group, previous string
	changedAt       int64 // ms; 0 = never
	scores          []float64
	// rfm is the R, F and M scores (0: none), so a re-score that moves
	// them within a group still rewrites the vector.
	rfm [3]uint8
}

func (r *autoRecord) equal(o *autoRecord) bool {
	if r.group != o.group || r.previous != o.previous || r.changedAt != o.changedAt || r.rfm != o.rfm || len(r.scores) != len(o.scores) {
		return false
	}
	for i := range r.scores {
		if !sameScore(r.scores[i], o.scores[i]) {
			return false
		}
	}
	return true
}

func (r *autoRecord) empty() bool { return r.equal(&autoRecord{}) }

func (r *autoRecord) encode() []byte { return r.appendTo(nil) }

func (r *autoRecord) appendTo(b []byte) []byte {
	b = appendStrings(binary.AppendVarint(b, r.changedAt), []string{r.group, r.previous})
	b = binary.AppendUvarint(b, uint64(len(r.scores)))
	for _, s := range r.scores {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(s))
	}
	return append(b, r.rfm[:]...)
}

func decodeAutoRecord(b []byte) (autoRecord, error) {
	rd := reader{b: b}
	at := rd.varint()
	ss := rd.strings()
	n := rd.uvarint()
	if rd.err || len(ss) != 2 || n > uint64(len(rd.b))/8 {
		return autoRecord{}, errCorrupt
	}
	rec := autoRecord{group: ss[0], previous: ss[1], changedAt: at}
	for range n {
		rec.scores = append(rec.scores, math.Float64frombits(rd.uint64()))
	}
	if len(rd.b) != 3 {
		return autoRecord{}, errCorrupt
	}
	copy(rec.rfm[:], rd.b)
	return rec, nil
}

// autoOf reads an entity's automatic record as values kept it before it
// moved into them: under r/<id> (zero when none).
func (t *task) autoOf(id string) (autoRecord, error) {
	b, closer, err := t.reader().Get(key(pkAuto, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return autoRecord{}, nil
	}
	if err != nil {
		return autoRecord{}, err
	}
	defer closer.Close()
	return decodeAutoRecord(b)
}

// setLegacyAuto takes rec, read from r/<id>, as e's record: legacyAuto
// when there was one, so the next write of e deletes it there.
func (e *entry) setLegacyAuto(rec autoRecord) {
	e.autoRec, e.autoLoaded, e.legacyAuto = rec, true, !rec.empty()
}

// dropLegacyAuto deletes e's automatic record kept apart (r/<id> and its
// changelog key) where there may be one: e's value holds it from now on,
// or e is gone.
func (t *task) dropLegacyAuto(x *txn, e *entry) {
	if !t.p.hasAuto() || (e.autoLoaded && !e.legacyAuto) {
		return
	}
	x.b.Delete(key(pkAuto, e.id), nil)
	x.recs = append(x.recs, t.stateRecord([]byte(clAutoPrefix+e.id), nil))
	e.legacyAuto = false
}

func (p *Processor) closeRFM() {
	if cl := p.rfmTopic.cl.Load(); cl != nil {
		cl.Close()
	}
}
