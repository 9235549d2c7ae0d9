package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// logistic is a binary logistic regression: margin = intercept + w·x.
type logistic struct {
	intercept float64
	weights   []float64 // in FeatureNames order
}

// margin treats a missing (NaN) input as 0, so it adds nothing: a logistic
// model has no learned missing-value direction, and NaN out would be worse
// than the intercept's answer.
func (l *logistic) margin(x []float64, out []float64) {
	s := l.intercept
	for i, w := range l.weights {
		if v := x[i]; v == v {
			s += w * v
		}
	}
	out[0] = s
}

// parseLogistic reads either
//
//	{"intercept": -1.2, "weights": {"orders_30d": 0.4, "revenue_30d": 0.01}}
//
// where the weights' order in the file is the input order, or the shape a
// scikit-learn LogisticRegression exports to directly:
//
//	{"intercept": [-1.2], "coef": [[0.4, 0.01]], "features": ["orders_30d", "revenue_30d"]}
//
// ("feature_names" is accepted for "features").
func parseLogistic(data []byte) (*Model, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	intercept, err := scalarOrOne(top["intercept"], "intercept")
	if err != nil {
		return nil, err
	}
	var (
		names   []string
		weights []float64
	)
	switch {
	case top["weights"] != nil:
		if top["coef"] != nil {
			return nil, errors.New("give either \"weights\" or \"coef\", not both")
		}
		names, weights, err = orderedWeights(top["weights"])
		if err != nil {
			return nil, fmt.Errorf("invalid weights: %w", err)
		}
	case top["coef"] != nil:
		weights, err = coefRow(top["coef"])
		if err != nil {
			return nil, err
		}
		raw := top["features"]
		if raw == nil {
			raw = top["feature_names"]
		}
		if raw == nil {
			return nil, errors.New("\"coef\" needs \"features\": the feature name of each coefficient")
		}
		if err := json.Unmarshal(raw, &names); err != nil {
			return nil, fmt.Errorf("invalid features: %w", err)
		}
		if len(names) != len(weights) {
			return nil, fmt.Errorf("%d features for %d coefficients", len(names), len(weights))
		}
	default:
		return nil, errors.New("no \"weights\" object (or \"coef\" and \"features\")")
	}
	if len(weights) == 0 {
		return nil, errors.New("model has no weights")
	}
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if n == "" {
			return nil, errors.New("empty feature name")
		}
		if seen[n] {
			return nil, fmt.Errorf("feature %q appears twice", n)
		}
		seen[n] = true
	}
	return &Model{
		objective:    "logistic",
		numFeatures:  len(weights),
		featureNames: names,
		numClass:     1,
		link:         linkSigmoid,
		sigmoid:      1,
		lin:          &logistic{intercept: intercept, weights: weights},
	}, nil
}

// scalarOrOne reads a number or a one-element array (scikit-learn's
// intercept_ is an array).
func scalarOrOne(raw json.RawMessage, name string) (float64, error) {
	if raw == nil {
		return 0, fmt.Errorf("no %q", name)
	}
	var v float64
	if err := json.Unmarshal(raw, &v); err == nil {
		return v, nil
	}
	var vs []float64
	if err := json.Unmarshal(raw, &vs); err != nil || len(vs) != 1 {
		return 0, fmt.Errorf("%q must be a number or a one-element array (only binary logistic regression is supported)", name)
	}
	return vs[0], nil
}

// coefRow reads coef as [w...] or [[w...]] (scikit-learn's coef_ shape for
// a binary classifier).
func coefRow(raw json.RawMessage) ([]float64, error) {
	var row []float64
	if err := json.Unmarshal(raw, &row); err == nil {
		return row, nil
	}
	var rows [][]float64
	if err := json.Unmarshal(raw, &rows); err != nil || len(rows) != 1 {
		return nil, errors.New("\"coef\" must be an array of numbers or one such array (only binary logistic regression is supported)")
	}
	return rows[0], nil
}

// orderedWeights reads a JSON object of numbers keeping the keys' order,
// which encoding/json's maps lose.
func orderedWeights(raw json.RawMessage) ([]string, []float64, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, errors.New("want an object of feature name to weight")
	}
	var (
		names   []string
		weights []float64
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		name := tok.(string) // object keys are always strings
		tok, err = dec.Token()
		if err != nil {
			return nil, nil, err
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, nil, fmt.Errorf("weight of %q is not a number", name)
		}
		w, err := num.Float64()
		if err != nil || math.IsInf(w, 0) {
			return nil, nil, fmt.Errorf("weight of %q: invalid number %s", name, num)
		}
		names = append(names, name)
		weights = append(weights, w)
	}
	return names, weights, nil
}
