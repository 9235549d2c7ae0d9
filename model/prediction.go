package model

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/internal/jsonstr"
)

// PredictionRecord is the one record type of the predictions topic
// (pulse.predictions, JSON, keyed by entity id): one answer of the scorer's
// POST /v1/predict. The scorer writes it with AppendPrediction; history
// reads it with DecodePredictionRaw into the predictions table. Apps may
// produce records by hand: the decoders take them tolerantly.
type PredictionRecord struct {
	UUID    string `json:"uuid"`
	Model   string `json:"model"`
	Version string `json:"version"` // SHA-256 prefix of the model file
	Entity  string `json:"entity"`
	ID      string `json:"id"`
	// Features are the model's inputs as used; null = missing.
	Features map[string]*float64 `json:"features"`
	// Score is null when the model was not used.
	Score      *float64  `json:"score"`
	Prediction any       `json:"prediction"`
	ModelUsed  bool      `json:"model_used"`
	At         time.Time `json:"at"`
}

// Encode is the record value, as AppendPrediction writes it (features in
// name order).
func (r *PredictionRecord) Encode() ([]byte, error) {
	names := make([]string, 0, len(r.Features))
	for name := range r.Features {
		names = append(names, name)
	}
	slices.Sort(names)
	x := make([]float64, len(names))
	for i, name := range names {
		x[i] = math.NaN()
		if v := r.Features[name]; v != nil {
			x[i] = *v
		}
	}
	pred, err := json.Marshal(r.Prediction)
	if err != nil {
		return nil, fmt.Errorf("cannot encode prediction record: %w", err)
	}
	return AppendPrediction(nil, r, names, x, pred), nil
}

// AppendPrediction appends the value of record r to b, with the features
// names[i]: x[i] (NaN and ±Inf written null) and the prediction's JSON pred
// in place of r.Features and r.Prediction. It is the scorer's
// per-prediction path: it builds neither a map nor an interface value, and
// allocates only when b must grow.
func AppendPrediction(b []byte, r *PredictionRecord, names []string, x []float64, pred []byte) []byte {
	b = append(b, `{"uuid":`...)
	b = jsonstr.Append(b, r.UUID)
	b = append(b, `,"model":`...)
	b = jsonstr.Append(b, r.Model)
	b = append(b, `,"version":`...)
	b = jsonstr.Append(b, r.Version)
	b = append(b, `,"entity":`...)
	b = jsonstr.Append(b, r.Entity)
	b = append(b, `,"id":`...)
	b = jsonstr.Append(b, r.ID)
	b = append(b, `,"features":{`...)
	for j, name := range names {
		if j > 0 {
			b = append(b, ',')
		}
		b = jsonstr.Append(b, name)
		b = append(b, ':')
		b = appendNumber(b, x[j])
	}
	b = append(b, `},"score":`...)
	if r.Score == nil {
		b = append(b, "null"...)
	} else {
		b = appendNumber(b, *r.Score)
	}
	b = append(b, `,"prediction":`...)
	b = append(b, pred...)
	b = append(b, `,"model_used":`...)
	b = strconv.AppendBool(b, r.ModelUsed)
	b = append(b, `,"at":"`...)
	b = r.At.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `"}`...)
	return b
}

// appendNumber writes f, or null for NaN and ±Inf (which JSON lacks).
func appendNumber(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// PredictionJSON holds the parts of a prediction record that
// DecodePredictionRaw leaves as sent, for readers that store them so.
type PredictionJSON struct {
	// Features is the features object; nil when absent.
	Features []byte
	// Score is the score as sent: a number, a list of class
	// probabilities, or null (kept, unlike the others); nil when absent.
	Score []byte
	// Prediction is the prediction's JSON; nil when absent.
	Prediction []byte
}

// PredictionText is the prediction as text: a JSON string's text, any
// other JSON value as written, "" when absent or null.
func (j *PredictionJSON) PredictionText() string { return rawText(j.Prediction) }

// DecodePrediction reads a record value: what AppendPrediction writes, and
// what DecodePredictionRaw tolerates. Features must be numbers or null.
func DecodePrediction(b []byte) (PredictionRecord, error) {
	r, raw, err := DecodePredictionRaw(b)
	if err != nil {
		return PredictionRecord{}, err
	}
	if !absent(raw.Features) {
		if err := json.Unmarshal(raw.Features, &r.Features); err != nil {
			return PredictionRecord{}, fmt.Errorf("cannot decode prediction: features: %w", err)
		}
	}
	if !absent(raw.Prediction) {
		if err := json.Unmarshal(raw.Prediction, &r.Prediction); err != nil {
			return PredictionRecord{}, fmt.Errorf("cannot decode prediction: prediction: %w", err)
		}
	}
	return r, nil
}

// wirePrediction is a record as sent, every field raw.
type wirePrediction struct {
	UUID       json.RawMessage `json:"uuid"`
	Model      json.RawMessage `json:"model"`
	Version    json.RawMessage `json:"version"`
	Entity     json.RawMessage `json:"entity"`
	ID         json.RawMessage `json:"id"`
	Features   json.RawMessage `json:"features"`
	Score      json.RawMessage `json:"score"`
	Prediction json.RawMessage `json:"prediction"`
	ModelUsed  json.RawMessage `json:"model_used"`
	At         json.RawMessage `json:"at"`
}

// DecodePredictionRaw reads a record value, leaving the features, the score
// as sent and the prediction as JSON (the record's Features and Prediction
// stay nil). It takes hand-produced records tolerantly: ids and versions may
// be numbers (read as written), entity defaults to user, score may be a
// list of class probabilities (Score is the first) or a numeric string,
// model_used is false only when false or 0, and at may be RFC 3339 text or
// epoch milliseconds (zero when neither).
func DecodePredictionRaw(b []byte) (PredictionRecord, PredictionJSON, error) {
	var w wirePrediction
	if err := json.Unmarshal(b, &w); err != nil {
		return PredictionRecord{}, PredictionJSON{}, fmt.Errorf("cannot decode prediction: %w", err)
	}
	r := PredictionRecord{
		UUID:    rawText(w.UUID),
		Model:   rawText(w.Model),
		Version: rawText(w.Version),
		Entity:  rawText(w.Entity),
		ID:      rawText(w.ID),
		At:      rawTime(w.At),
	}
	if r.Entity == "" {
		r.Entity = "user"
	}
	var v any
	if json.Unmarshal(w.Score, &v) == nil {
		if list, ok := v.([]any); ok && len(list) > 0 {
			v = list[0]
		}
		if v != nil {
			if f, ok := event.Number(v); ok {
				r.Score = &f
			}
		}
	}
	used := bytes.TrimSpace(w.ModelUsed)
	r.ModelUsed = !bytes.Equal(used, []byte("false")) && !bytes.Equal(used, []byte("0"))
	raw := PredictionJSON{Features: nilIfAbsent(w.Features), Score: bytes.TrimSpace(w.Score), Prediction: nilIfAbsent(w.Prediction)}
	return r, raw, nil
}

// absent says whether a raw JSON value is missing or null.
func absent(m []byte) bool {
	m = bytes.TrimSpace(m)
	return len(m) == 0 || bytes.Equal(m, []byte("null"))
}

func nilIfAbsent(m []byte) []byte {
	if absent(m) {
		return nil
	}
	return m
}

// rawText is a JSON string's text, or any other JSON value as written.
func rawText(m []byte) string {
	m = bytes.TrimSpace(m)
	if absent(m) {
		return ""
	}
	if m[0] == '"' {
		var s string
		if json.Unmarshal(m, &s) == nil {
			return s
		}
	}
	return string(m)
}

// rawTime reads RFC 3339 text or epoch milliseconds.
func rawTime(m []byte) time.Time {
	s := rawText(m)
	if s == "" {
		return time.Time{}
	}
	if ms, err := strconv.ParseFloat(s, 64); err == nil {
		return time.UnixMilli(int64(ms)).UTC()
	}
	if t, err := event.ParseTime(s); err == nil {
		return t.UTC()
	}
	return time.Time{}
}
