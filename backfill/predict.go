package backfill

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/model"
)

// PredictOptions select whom Predict scores and as of when.
type PredictOptions struct {
	Entities []string  // empty: every entity in the history
	At       time.Time // features as of this time; default now
	Progress io.Writer
}

// Prediction is one entity's batch prediction.
type Prediction struct {
	EntityID string
	Scores   []float64 // one per class; one for binary and regression
	Label    string    // from the model's labels, "" when it has none
}

// Predict scores entities with the configured model name: features as of
// opts.At are replayed from history (as TrainingSet does), fed in the
// model's feature order (missing values as NaN), and labelled as the
// scorer labels them.
func Predict(ctx context.Context, cfg *config.Config, r *history.Reader, name string, opts PredictOptions, emit func(Prediction) error) error {
	var mc *config.Model
	for i := range cfg.Models {
		if cfg.Models[i].Name == name {
			mc = &cfg.Models[i]
		}
	}
	if mc == nil {
		return fmt.Errorf("no model %q in the config", name)
	}
	data, err := os.ReadFile(cfg.Resolve(mc.Path))
	if err != nil {
		return fmt.Errorf("cannot read model %s: %w", name, err)
	}
	m, err := model.Parse(data, mc.Format)
	if err != nil {
		return fmt.Errorf("cannot load model %s: %w", name, err)
	}
	if len(mc.Features) < m.NumFeatures() {
		return fmt.Errorf("model %s reads %d features, the config lists %d", name, m.NumFeatures(), len(mc.Features))
	}
	set, idx, err := compile(cfg, mc.Features)
	if err != nil {
		return err
	}
	if opts.At.IsZero() {
		opts.At = time.Now()
	}
	x := make([]float64, len(mc.Features))
	out := make([]float64, max(1, m.NumClass()))
	var vals []any
	var n int
	p := newProgress(opts.Progress, "predict "+name, func() string { return fmt.Sprintf("%d entities", n) })
	defer p.done()
	st := set.NewState() // one, reset for each entity: see State.Reset
	score := func(id string, evs []*event.Event) error {
		st.Reset()
		for _, e := range evs {
			set.Apply(st, e)
		}
		vals = set.Values(st, opts.At, vals)
		for j, k := range idx {
			x[j] = math.NaN()
			if f, ok := vals[k].(float64); ok {
				x[j] = f
			}
		}
		m.Predict(x, out)
		pr := Prediction{EntityID: id, Scores: append([]float64(nil), out[:m.NumClass()]...), Label: label(mc, out[:m.NumClass()])}
		n++
		return emit(pr)
	}
	seen := map[string]bool{}
	err = r.EachEntity(ctx, replayFilter(set, history.EventFilter{Until: opts.At, Entities: opts.Entities}), func(id string, evs []*event.Event) error {
		seen[id] = true
		return score(id, evs)
	})
	if err != nil {
		return err
	}
	for _, id := range opts.Entities { // named but without history: scored on empty features
		if !seen[id] {
			if err := score(id, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// label names a prediction as the scorer does: for one output, labels[1]
// when the score reaches the threshold, else labels[0]; for classes, the
// most probable class's label.
func label(mc *config.Model, scores []float64) string {
	if len(mc.Labels) == 0 {
		return ""
	}
	if len(scores) == 1 {
		if len(mc.Labels) < 2 {
			return mc.Labels[0]
		}
		if scores[0] >= mc.Threshold {
			return mc.Labels[1]
		}
		return mc.Labels[0]
	}
	best := 0
	for i, s := range scores {
		if s > scores[best] {
			best = i
		}
	}
	if best < len(mc.Labels) {
		return mc.Labels[best]
	}
	return strconv.Itoa(best)
}

// PredictionCSV writes predictions as CSV: entity_id,score,label (score is
// the first output; multiclass models add score_1, score_2...).
type PredictionCSV struct {
	w      *csv.Writer
	header bool
}

// NewPredictionCSV writes to w.
func NewPredictionCSV(w io.Writer) *PredictionCSV { return &PredictionCSV{w: csv.NewWriter(w)} }

// Write writes one prediction (and the header before the first).
func (c *PredictionCSV) Write(p Prediction) error {
	if !c.header {
		head := []string{"entity_id", "score"}
		for i := 1; i < len(p.Scores); i++ {
			head = append(head, "score_"+strconv.Itoa(i))
		}
		c.w.Write(append(head, "label"))
		c.header = true
	}
	rec := []string{p.EntityID}
	for _, s := range p.Scores {
		rec = append(rec, strconv.FormatFloat(s, 'g', -1, 64))
	}
	return c.w.Write(append(rec, p.Label))
}

// Flush flushes the CSV.
func (c *PredictionCSV) Flush() error {
	c.w.Flush()
	return c.w.Error()
}

// WritePredictions creates table (entity_id, model, at, score, scores as
// JSON, label) if missing and inserts preds.
func WritePredictions(ctx context.Context, h *history.Reader, table, modelName string, at time.Time, preds []Prediction) error {
	name := qualified(h, table)
	if err := h.Conn().Exec(ctx, "CREATE TABLE IF NOT EXISTS "+name+
		" (entity_id String, model String, at DateTime, at_ms Int64, score Float64, scores String, label String) ENGINE = MergeTree ORDER BY (model, entity_id)"); err != nil {
		return fmt.Errorf("cannot create %s: %w", name, err)
	}
	b, err := h.Conn().PrepareBatch(ctx, "INSERT INTO "+name+" (entity_id, model, at, at_ms, score, scores, label)")
	if err != nil {
		return fmt.Errorf("cannot insert into %s: %w", name, err)
	}
	for _, p := range preds {
		parts := make([]string, len(p.Scores))
		for i, s := range p.Scores {
			parts[i] = strconv.FormatFloat(s, 'g', -1, 64)
		}
		if err := b.Append(p.EntityID, modelName, at, at.UnixMilli(), p.Scores[0], "["+strings.Join(parts, ",")+"]", p.Label); err != nil {
			b.Abort()
			return fmt.Errorf("cannot insert into %s: %w", name, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("cannot insert into %s: %w", name, err)
	}
	return nil
}
