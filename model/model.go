package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// Formats accepted by Parse.
const (
	FormatXGBoost  = "xgboost"
	FormatLightGBM = "lightgbm"
	FormatLogistic = "logistic"
)

// Model is a parsed model, ready to score rows. It is immutable and safe for
// concurrent use.
type Model struct {
	format       string
	objective    string
	numFeatures  int
	featureNames []string
	numClass     int
	link         link
	sigmoid      float64 // LightGBM's sigmoid parameter; 1 elsewhere

	xgb *xgbForest
	lgb *lgbForest
	lin *logistic
}

// maxFeatures bounds a model's input width (XGBoost nodes keep the feature
// index in 30 bits).
const maxFeatures = 1 << 24

// link is the transform from raw margins to predictions.
type link uint8

const (
	linkIdentity   link = iota
	linkSigmoid         // 1/(1+exp(-sigmoid*m))
	linkSoftmax         // over the NumClass margins
	linkExp             // log-link regressions: poisson, gamma, tweedie
	linkSignSquare      // LightGBM "regression sqrt": sign(m)*m*m
)

// Parse reads a model. format is "xgboost", "lightgbm", "logistic" or ""
// to detect it from the content: LightGBM text starts with "tree", XGBoost
// JSON has a "learner" object, logistic JSON has "intercept".
func Parse(data []byte, format string) (*Model, error) {
	if format == "" {
		f, err := detect(data)
		if err != nil {
			return nil, err
		}
		format = f
	}
	var (
		m   *Model
		err error
	)
	switch format {
	case FormatXGBoost:
		m, err = parseXGBoost(data)
	case FormatLightGBM:
		m, err = parseLightGBM(data)
	case FormatLogistic:
		m, err = parseLogistic(data)
	default:
		return nil, fmt.Errorf("unknown model format %q: want xgboost, lightgbm or logistic", format)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot parse %s model: %w", format, err)
	}
	m.format = format
	return m, nil
}

// detect guesses the format of data.
func detect(data []byte) (string, error) {
	s := bytes.TrimLeft(data, " \t\r\n\ufeff")
	if len(s) == 0 {
		return "", errors.New("cannot detect model format: empty file")
	}
	if bytes.HasPrefix(s, []byte("tree\n")) || bytes.HasPrefix(s, []byte("tree\r\n")) {
		return FormatLightGBM, nil
	}
	if s[0] != '{' {
		return "", errors.New("cannot detect model format: not XGBoost JSON, LightGBM text or logistic JSON (XGBoost's legacy binary format is not supported; save with save_model(\"m.json\"))")
	}
	if isUBJSON(s) {
		return "", errUBJSON
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(quoteNonFinite(s), &top); err != nil {
		return "", fmt.Errorf("cannot detect model format: invalid JSON: %w", err)
	}
	switch {
	case top["learner"] != nil:
		return FormatXGBoost, nil
	case top["intercept"] != nil || top["weights"] != nil || top["coef"] != nil:
		return FormatLogistic, nil
	}
	return "", errors.New("cannot detect model format: JSON has neither \"learner\" (XGBoost) nor \"intercept\" (logistic)")
}

var errUBJSON = errors.New("XGBoost UBJSON models are not supported: save the booster with save_model(\"m.json\")")

// isUBJSON reports whether s (starting with '{') looks like UBJSON: there the
// opening brace is followed by a type marker, in JSON by a quote or space.
func isUBJSON(s []byte) bool {
	if len(s) < 2 {
		return false
	}
	switch s[1] {
	case 'i', 'U', 'I', 'l', 'L', '$', '#':
		return true
	}
	return false
}

// Format returns "xgboost", "lightgbm" or "logistic".
func (m *Model) Format() string { return m.format }

// NumFeatures is the length of the row Margin and Predict read.
func (m *Model) NumFeatures() int { return m.numFeatures }

// FeatureNames returns the feature names stored in the model file, in input
// order, or nil when the file has none. For the logistic format they are the
// weights' names in file order; the scorer maps features to them by name.
// The slice must not be modified.
func (m *Model) FeatureNames() []string { return m.featureNames }

// NumClass is the number of outputs per row: 1 for binary and regression.
func (m *Model) NumClass() int { return m.numClass }

// Objective is the training objective as the model file names it, such as
// "binary:logistic" or "multiclass"; "logistic" for the logistic format.
func (m *Model) Objective() string { return m.objective }

// Margin writes the raw margins (len NumClass) for one row: the sum of the
// trees plus the base score, before the objective's transform. As in
// LightGBM, a random-forest model's (average_output) raw margin is the sum,
// not the average, of its trees; Predict averages. x must have
// len >= NumFeatures, with NaN for missing values; out must have len >=
// NumClass. It does not allocate.
func (m *Model) Margin(x []float64, out []float64) {
	if len(x) < m.numFeatures || len(out) < m.numClass {
		panic(fmt.Sprintf("model: Margin needs len(x) >= %d and len(out) >= %d, got %d and %d", m.numFeatures, m.numClass, len(x), len(out)))
	}
	switch {
	case m.xgb != nil:
		m.xgb.margin(x, out)
	case m.lgb != nil:
		m.lgb.margin(x, out)
	default:
		m.lin.margin(x, out)
	}
}

// Predict writes the transformed outputs for one row: probabilities for
// logistic, binary and multi-class objectives (also for multi:softmax, whose
// callers take the argmax), the value itself for regression. Arguments are as
// for Margin. It does not allocate.
func (m *Model) Predict(x []float64, out []float64) {
	m.Margin(x, out)
	out = out[:m.numClass]
	if m.lgb != nil && m.lgb.divisor != 1 {
		for i := range out {
			out[i] /= m.lgb.divisor
		}
	}
	switch m.link {
	case linkSigmoid:
		for i, v := range out {
			out[i] = sigmoid(m.sigmoid * v)
		}
	case linkSoftmax:
		softmax(out)
	case linkExp:
		for i, v := range out {
			out[i] = math.Exp(v)
		}
	case linkSignSquare:
		for i, v := range out {
			out[i] = math.Copysign(v*v, v)
		}
	}
}

func sigmoid(v float64) float64 { return 1 / (1 + math.Exp(-v)) }

func softmax(out []float64) {
	hi := math.Inf(-1)
	for _, v := range out {
		hi = max(hi, v)
	}
	var sum float64
	for i, v := range out {
		e := math.Exp(v - hi)
		out[i] = e
		sum += e
	}
	for i := range out {
		out[i] /= sum
	}
}

// checkTree verifies that the nodes reachable from root form a tree whose
// children are in [root, hi) and whose internal nodes split on a feature
// below numFeatures, so that scoring cannot index out of range on a
// malformed file. A leaf is a node whose children are itself. It returns the
// tree's depth: the steps from the root to its deepest leaf.
func checkTree(root, hi int, children func(i int) (int, int), feature func(i int) int, numFeatures int) (int, error) {
	type item struct{ node, depth int }
	seen := make(map[int]bool)
	stack := []item{{root, 0}}
	depth := 0
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		i := it.node
		if i < root || i >= hi {
			return 0, fmt.Errorf("node index %d out of range", i-root)
		}
		if seen[i] {
			return 0, fmt.Errorf("node %d is reached twice: not a tree", i-root)
		}
		seen[i] = true
		l, r := children(i)
		if l == i && r == i {
			depth = max(depth, it.depth)
			continue
		}
		if l == i || r == i {
			return 0, fmt.Errorf("node %d is its own child", i-root)
		}
		if f := feature(i); f < 0 || f >= numFeatures {
			return 0, fmt.Errorf("node %d splits on feature %d, model has %d features", i-root, f, numFeatures)
		}
		stack = append(stack, item{l, it.depth + 1}, item{r, it.depth + 1})
	}
	return depth, nil
}
