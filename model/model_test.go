package model

import (
	"math"
	"slices"
	"strings"
	"testing"
)

var nan = math.NaN()

// xgbOneSplit is a hand-written XGBoost 3.x model: one tree, feature 0 <
// 0.1f goes left (leaf -1), else right (leaf 1); missing goes right.
const xgbOneSplit = `{"learner":{"attributes":{},"feature_names":["a","b"],"feature_types":["float","float"],
"gradient_booster":{"model":{"gbtree_model_param":{"num_parallel_tree":"1","num_trees":"1"},"iteration_indptr":[0,1],
"tree_info":[0],"trees":[{"base_weights":[0,-1,1],"categories":[],"categories_nodes":[],"categories_segments":[],
"categories_sizes":[],"default_left":[0,0,0],"id":0,"left_children":[1,-1,-1],"loss_changes":[1,0,0],
"parents":[2147483647,0,0],"right_children":[2,-1,-1],"split_conditions":[1E-1,-1E0,1E0],"split_indices":[0,0,0],
"split_type":[0,0,0],"sum_hessian":[2,1,1],"tree_param":{"num_deleted":"0","num_feature":"2","num_nodes":"3","size_leaf_vector":"1"}}]},
"name":"gbtree"},"learner_model_param":{"base_score":"[5E-1]","boost_from_average":"1","num_class":"0","num_feature":"2","num_target":"1"},
"objective":{"name":"binary:logistic","reg_loss_param":{"scale_pos_weight":"1"}}},"version":[3,2,0]}`

func margin(t *testing.T, m *Model, x ...float64) float64 {
	t.Helper()
	out := make([]float64, m.NumClass())
	m.Margin(x, out)
	return out[0]
}

func mustParse(t *testing.T, data, format string) *Model {
	t.Helper()
	m, err := Parse([]byte(data), format)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return m
}

func TestXGBoostComparesInFloat32(t *testing.T) {
	m := mustParse(t, xgbOneSplit, "")
	if m.Format() != "xgboost" || m.Objective() != "binary:logistic" || m.NumFeatures() != 2 || !slices.Equal(m.FeatureNames(), []string{"a", "b"}) {
		t.Fatalf("got %s %s %d %v", m.Format(), m.Objective(), m.NumFeatures(), m.FeatureNames())
	}
	c := float64(float32(0.1))
	f := func(x, want float64) {
		t.Helper()
		if got := margin(t, m, x, 0); got != want {
			t.Errorf("x=%.17g: margin %v, want %v", x, got, want)
		}
	}
	f(0, -1)
	f(c, 1)       // equal goes right
	f(c-1e-12, 1) // below in float64, equal in float32: right, as XGBoost
	f(c-1e-7, -1) // below in float32 too
	f(nan, 1)     // default_left=0
	f(math.Inf(-1), -1)
	f(math.Inf(1), 1)
	f(1e300, 1) // +Inf in float32
}

func TestXGBoostOlderFormats(t *testing.T) {
	// XGBoost 1.x wrote default_left as booleans and base_score as a
	// scalar; models from before categorical support have no split_type.
	old := strings.NewReplacer(`"default_left":[0,0,0]`, `"default_left":[true,false,false]`,
		`"base_score":"[5E-1]"`, `"base_score":"5E-1"`,
		`"split_type":[0,0,0],`, ``,
		`"categories":[],"categories_nodes":[],"categories_segments":[],`, ``,
		`"categories_sizes":[],`, ``).Replace(xgbOneSplit)
	m := mustParse(t, old, "xgboost")
	if got := margin(t, m, nan, 0); got != -1 {
		t.Errorf("missing with default_left=true: margin %v, want -1", got)
	}
	out := []float64{0}
	m.Predict([]float64{0.5, 0}, out)
	if want := 1 / (1 + math.Exp(-1)); math.Abs(out[0]-want) > 1e-7 {
		t.Errorf("Predict = %v, want %v", out[0], want)
	}
}

func TestXGBoostCategorical(t *testing.T) {
	// Node 0 is categorical on feature 1 with set {1, 3, 40}: those go
	// right (leaf 1), everything else left (leaf -1); missing goes left.
	m := mustParse(t, strings.NewReplacer(
		`"categories":[],"categories_nodes":[],"categories_segments":[]`,
		`"categories":[1,3,40],"categories_nodes":[0],"categories_segments":[0]`,
		`"categories_sizes":[]`, `"categories_sizes":[3]`,
		`"default_left":[0,0,0]`, `"default_left":[1,0,0]`,
		`"split_indices":[0,0,0]`, `"split_indices":[1,0,0]`,
		`"split_type":[0,0,0]`, `"split_type":[1,0,0]`).Replace(xgbOneSplit), "")
	f := func(cat, want float64) {
		t.Helper()
		if got := margin(t, m, 0, cat); got != want {
			t.Errorf("category %v: margin %v, want %v", cat, got, want)
		}
	}
	f(1, 1)
	f(3, 1)
	f(3.9, 1) // truncated, as XGBoost
	f(40, 1)
	f(0, -1)
	f(2, -1)
	f(41, -1)  // beyond the bitset
	f(500, -1) // far beyond
	f(-1, -1)  // invalid
	f(1e30, -1)
	f(nan, -1) // missing: default_left
}

// lgbModel is a hand-written LightGBM v3 text model with three trees:
// tree 0 splits feature 0 at 0.5 (missing type NaN, default left), then
// feature 1 at -kZeroThreshold (missing type None); tree 1 is categorical on
// feature 2 (categories 1 and 33 go left); tree 2 is a single leaf.
const lgbModel = `tree
version=v3
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=2
objective=binary sigmoid:2
feature_names=a b c
feature_infos=[0:1] [0:1] 1:33
tree_sizes=1 1 1

Tree=0
num_leaves=3
num_cat=0
split_feature=0 1
split_gain=1 1
threshold=0.5 -1.0000000180025095e-35
decision_type=10 0
left_child=1 -1
right_child=-3 -2
leaf_value=1 2 3
leaf_weight=1 1 1
leaf_count=1 1 1
internal_value=0 0
internal_weight=0 0
internal_count=3 2
is_linear=0
shrinkage=1


Tree=1
num_leaves=2
num_cat=1
split_feature=2
split_gain=1
threshold=0
decision_type=1
left_child=-1
right_child=-2
leaf_value=10 20
leaf_weight=1 1
leaf_count=1 1
internal_value=0
internal_weight=0
internal_count=2
cat_boundaries=0 2
cat_threshold=2 2
is_linear=0
shrinkage=0.1


Tree=2
num_leaves=1
num_cat=0
split_feature=
split_gain=
threshold=
decision_type=
left_child=
right_child=
leaf_value=100
leaf_weight=
leaf_count=
internal_value=
internal_weight=
internal_count=
is_linear=0
shrinkage=1


end of trees

feature_importances:
a=1

parameters:
[boosting: gbdt]
[objective: binary]
end of parameters

pandas_categorical:null
`

func TestLightGBMDecisions(t *testing.T) {
	m := mustParse(t, lgbModel, "")
	if m.Format() != "lightgbm" || m.Objective() != "binary" || m.NumFeatures() != 3 || !slices.Equal(m.FeatureNames(), []string{"a", "b", "c"}) {
		t.Fatalf("got %s %s %d %v", m.Format(), m.Objective(), m.NumFeatures(), m.FeatureNames())
	}
	f := func(a, b, c, want float64) {
		t.Helper()
		if got := margin(t, m, a, b, c); got != want {
			t.Errorf("x=(%v, %v, %v): margin %v, want %v", a, b, c, got, want)
		}
	}
	// Tree 0: a <= 0.5 (NaN left) then b <= -1e-35 (NaN and |b|<=1e-35 are 0: right).
	f(0.5, -1, 1, 1+10+100)
	f(0.6, -1, 1, 3+10+100)
	f(nan, -1, 1, 1+10+100)
	f(0, 0, 1, 2+10+100)
	f(0, nan, 1, 2+10+100)
	f(0, -1e-36, 1, 2+10+100) // near zero scores as 0
	f(0, -2e-35, 1, 1+10+100)
	// Tree 1: categories {1, 33} go left (10), others right (20).
	f(0, -1, 33, 1+10+100)
	f(0, -1, 33.7, 1+10+100)
	f(0, -1, 2, 1+20+100)
	f(0, -1, -0.5, 1+20+100) // truncates to 0, not in the set
	f(0, -1, -1, 1+20+100)
	f(0, -1, 64, 1+20+100)
	f(0, -1, nan, 1+20+100)
	f(0, -1, 1e40, 1+20+100)

	out := []float64{0}
	m.Predict([]float64{0, -1, 1}, out)
	if want := 1 / (1 + math.Exp(-2*111.0)); out[0] != want {
		t.Errorf("Predict with sigmoid:2 = %v, want %v", out[0], want)
	}
}

func TestLightGBMMissingTypes(t *testing.T) {
	// decision_type: bit 1 default left, bits 2-3 missing type.
	f := func(dtype string, x, want float64) {
		t.Helper()
		data := strings.Replace(lgbModel, "decision_type=10 0", "decision_type="+dtype+" 0", 1)
		m := mustParse(t, data, "lightgbm")
		if got := margin(t, m, x, -1, 1) - 110; got != want {
			t.Errorf("decision_type %s, x=%v: leaf %v, want %v", dtype, x, got, want)
		}
	}
	// None: NaN is 0, compared with the threshold 0.5: left.
	f("0", nan, 1)
	f("2", nan, 1)
	f("0", 0.7, 3)
	// Zero: 0 and NaN are missing and take the default side.
	f("4", 0, 3)
	f("4", nan, 3)
	f("4", 1e-36, 3)
	f("6", 0, 1)
	f("4", 0.2, 1)
	// NaN: NaN takes the default side, 0 is compared.
	f("8", nan, 3)
	f("10", nan, 1)
	f("8", 0, 1)
}

func TestLightGBMMulticlassAndAverage(t *testing.T) {
	// Two classes' trees interleave: tree 0 class 0, tree 1 class 1, ...
	m := mustParse(t, strings.NewReplacer("num_class=1", "num_class=2", "num_tree_per_iteration=1", "num_tree_per_iteration=2",
		"objective=binary sigmoid:2", "objective=multiclass num_class:2",
		"\nTree=2\n", "\nTree=2\n", "end of trees", "Tree=3\nnum_leaves=1\nleaf_value=1000\n\n\nend of trees").Replace(lgbModel), "")
	out := make([]float64, 2)
	m.Margin([]float64{0, -1, 1}, out)
	if out[0] != 1+100 || out[1] != 10+1000 {
		t.Errorf("margins %v, want [101 1010]", out)
	}
	m.Predict([]float64{0, -1, 1}, out)
	if math.Abs(out[0]+out[1]-1) > 1e-15 || !(out[1] > out[0]) {
		t.Errorf("softmax %v", out)
	}

	// average_output (boosting=rf): raw margin is the sum, Predict averages.
	m = mustParse(t, strings.Replace(strings.Replace(lgbModel, "objective=binary sigmoid:2", "objective=regression\naverage_output", 1), "tree_sizes", "x", 1), "")
	m.Margin([]float64{0, -1, 1}, out)
	if out[0] != 111 {
		t.Errorf("rf margin %v, want 111", out[0])
	}
	m.Predict([]float64{0, -1, 1}, out)
	if out[0] != 37 {
		t.Errorf("rf prediction %v, want 37", out[0])
	}
}

func TestLogistic(t *testing.T) {
	// Weights keep the file's order, which is not alphabetical.
	m := mustParse(t, `{"intercept": -1, "weights": {"orders_30d": 0.5, "cart_adds_24h": 2, "age": -0.25}}`, "")
	if m.Format() != "logistic" || m.NumFeatures() != 3 || !slices.Equal(m.FeatureNames(), []string{"orders_30d", "cart_adds_24h", "age"}) {
		t.Fatalf("got %s %d %v", m.Format(), m.NumFeatures(), m.FeatureNames())
	}
	if got := margin(t, m, 2, 1, 4); got != -1+1+2-1 {
		t.Errorf("margin %v, want 1", got)
	}
	if got := margin(t, m, 2, nan, 4); got != -1+1-1 {
		t.Errorf("missing adds nothing: margin %v, want -1", got)
	}
	m = mustParse(t, `{"intercept": [0.5], "coef": [[1, -1]], "features": ["a", "b"]}`, "logistic")
	if got := margin(t, m, 3, 1); got != 2.5 {
		t.Errorf("sklearn shape: margin %v, want 2.5", got)
	}
	m = mustParse(t, `{"intercept": 0.5, "coef": [1, -1], "feature_names": ["a", "b"]}`, "")
	out := []float64{0}
	m.Predict([]float64{0, 0.5}, out)
	if out[0] != 0.5 {
		t.Errorf("Predict = %v, want 0.5", out[0])
	}
}

func TestParseErrors(t *testing.T) {
	f := func(data, format, want string) {
		t.Helper()
		_, err := Parse([]byte(data), format)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%.40q, %q) error %v, want it to mention %q", data, format, err, want)
		}
	}
	f("", "", "empty")
	f("hello", "", "cannot detect")
	f(`{"a": 1}`, "", "cannot detect")
	f(`{"intercept": 1}`, "", "no \"weights\"")
	f(xgbOneSplit, "onnx", "unknown model format")
	f("{L\x00\x00\x00\x00\x00\x00\x00\x07learner", "", "UBJSON")
	f(strings.Replace(xgbOneSplit, "binary:logistic", "rank:pairwise", 1), "", `objective "rank:pairwise" is not supported`)
	f(strings.Replace(xgbOneSplit, `"num_target":"1"`, `"num_target":"2"`, 1), "", "multi-target")
	f(strings.Replace(xgbOneSplit, `"size_leaf_vector":"1"`, `"size_leaf_vector":"2"`, 1), "", "multi-output trees")
	f(strings.Replace(xgbOneSplit, `"split_indices":[0,0,0]`, `"split_indices":[7,0,0]`, 1), "", "feature 7")
	f(strings.Replace(xgbOneSplit, `"left_children":[1,-1,-1]`, `"left_children":[2,-1,-1]`, 1), "", "reached twice")
	f(strings.Replace(xgbOneSplit, `"left_children":[1,-1,-1]`, `"left_children":[0,-1,-1]`, 1), "", "out of range")
	f(strings.Replace(xgbOneSplit, `"base_score":"[5E-1]"`, `"base_score":"[1.5E0]"`, 1), "", "base_score")
	f(strings.Replace(xgbOneSplit, `"name":"gbtree"},"learner_model_param"`, `"name":"gblinear"},"learner_model_param"`, 1), "", "gblinear")
	f(strings.Replace(xgbOneSplit, `"num_class":"0"`, `"num_class":"3"`, 1), "", "num_class=3")
	f(strings.Replace(lgbModel, "is_linear=0\nshrinkage=0.1", "is_linear=1\nshrinkage=0.1", 1), "", "linear trees")
	f(strings.Replace(lgbModel, "objective=binary sigmoid:2", "objective=custom", 1), "", "not supported")
	f(strings.Replace(lgbModel, "split_feature=0 1", "split_feature=0 3", 1), "", "feature 3")
	f(strings.Replace(lgbModel, "left_child=1 -1", "left_child=1 -9", 1), "", "out of range")
	f(strings.Replace(lgbModel, "cat_threshold=2 2", "cat_threshold=2", 1), "", "cat_boundaries")
	f(strings.Replace(lgbModel, "decision_type=10 0", "decision_type=12 0", 1), "", "missing type")
	f(`{"intercept": 0, "weights": {"a": 1, "a": 2}}`, "", "twice")
	f(`{"intercept": 0, "weights": {"a": "x"}}`, "", "not a number")
	f(`{"intercept": 0, "coef": [1, 2], "features": ["a"]}`, "", "1 features for 2")
	f(`{"intercept": [0, 1], "coef": [[1], [2]], "features": ["a"]}`, "", "only binary")
	f(`{"intercept": 0, "coef": [1]}`, "", "needs \"features\"")
}

func TestMarginPanicsOnShortRow(t *testing.T) {
	m := mustParse(t, xgbOneSplit, "")
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "len(x) >= 2") {
			t.Errorf("recover() = %v, want a panic naming the row length", r)
		}
	}()
	m.Margin([]float64{1}, []float64{0})
}
