package model

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// lgbForest scores LightGBM text models the way LightGBM's Tree::Predict
// does, in float64: go left when x <= threshold, with the missing-value and
// categorical rules of decision_type. Trees are walked lanes at a time, as
// in xgbForest.
type lgbForest struct {
	nodes []lgbNode
	treeLanes
	classes int // num_tree_per_iteration: tree t adds to class t % classes
	// divisor is 1, or the number of iterations for average_output (random
	// forest). As in LightGBM, raw scores are sums; predictions divide first.
	divisor  float64
	catBits  []uint32
	catRange []catRange
}

// lgbNode is one node. A leaf's children are itself and its value is in
// value.
type lgbNode struct {
	value float64 // threshold; leaf value; for categorical splits the index into catRange
	feat  int32
	kids  [2]int32 // left, right: absolute indexes into nodes
	flags uint8    // lgbFlag*, derived from decision_type
}

// decision_type bits, as in LightGBM's tree.h.
const (
	lgbCategoricalMask = 1
	lgbDefaultLeftMask = 2
	lgbMissingNone     = 0
	lgbMissingZero     = 1
	lgbMissingNaN      = 2
	// kZeroThreshold is the float 1e-35f held in a double. LightGBM drops
	// inputs within it of zero before predicting, so they score as 0.
	lgbZeroThreshold = float64(float32(1e-35))
)

// lgbNode.flags: decision_type reduced to where each kind of input goes.
// LightGBM's NumericalDecision sends NaN and values within kZeroThreshold of
// zero the same way for every input, so those two outcomes are fixed per
// node at parse time.
const (
	lgbFlagNaNRight    = 1 << 0 // NaN goes right
	lgbFlagZeroRight   = 1 << 1 // |x| <= kZeroThreshold goes right
	lgbFlagCategorical = 1 << 2
)

func (f *lgbForest) margin(x []float64, out []float64) {
	k := f.classes
	for c := 0; c < k; c++ {
		out[c] = 0
	}
	nodes, roots := f.nodes, f.roots
	var acc float64
	for g, depth := range f.depth {
		t := g * lanes
		a, b, c, d := roots[t], roots[t+1], roots[t+2], roots[t+3]
		for s := depth; s > 0; s-- {
			a, b, c, d = f.step(a, x), f.step(b, x), f.step(c, x), f.step(d, x)
		}
		leaves := [lanes]float64{nodes[a].value, nodes[b].value, nodes[c].value, nodes[d].value}
		n := min(lanes, f.numTrees-t)
		if k == 1 {
			for _, v := range leaves[:n] {
				acc += v
			}
			continue
		}
		for j, v := range leaves[:n] {
			out[(t+j)%k] += v
		}
	}
	if k == 1 {
		out[0] = acc
	}
}

// step moves one level down from node i: NaN and (near) zero go where the
// node's flags say, any other value left when x <= threshold.
func (f *lgbForest) step(i int32, x []float64) int32 {
	nd := &f.nodes[i]
	v := x[nd.feat]
	fl := int(nd.flags)
	if fl&lgbFlagCategorical != 0 {
		return nd.kids[f.categoryRight(nd, v)]
	}
	nan := b2i(v != v)
	zero := b2i(math.Abs(v) <= lgbZeroThreshold)
	greater := b2i(!(v <= nd.value))
	right := greater&^(nan|zero) | fl&lgbFlagNaNRight&nan | fl>>1&zero
	return nd.kids[right]
}

// categoryRight follows LightGBM 4's CategoricalDecision: NaN and negative
// values go right; the value truncated to an int goes left when it is in the
// node's bitset.
func (f *lgbForest) categoryRight(nd *lgbNode, v float64) int {
	v = math.Trunc(v)
	if v != v || v < 0 || v >= math.MaxInt32 {
		// LightGBM casts to int: values past int32 wrap negative.
		return 1
	}
	c := uint32(v)
	r := f.catRange[int(nd.value)]
	w := c / 32
	if w >= r.n {
		return 1
	}
	return int(1 ^ f.catBits[r.off+w]>>(c%32)&1)
}

// lgbObjective maps a LightGBM objective name to its output transform.
var lgbObjectives = map[string]link{
	"regression":    linkIdentity,
	"regression_l2": linkIdentity,
	"regression_l1": linkIdentity,
	"huber":         linkIdentity,
	"fair":          linkIdentity,
	"quantile":      linkIdentity,
	"mape":          linkIdentity,
	"lambdarank":    linkIdentity,
	"rank_xendcg":   linkIdentity,
	"poisson":       linkExp,
	"gamma":         linkExp,
	"tweedie":       linkExp,
	"binary":        linkSigmoid,
	"cross_entropy": linkSigmoid,
	"multiclass":    linkSoftmax,
	"multiclassova": linkSigmoid,
}

func parseLightGBM(data []byte) (*Model, error) {
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	i := 0
	for i < len(lines) && strings.TrimSpace(lines[i]) == "" {
		i++
	}
	if i == len(lines) || strings.TrimSpace(lines[i]) != "tree" {
		return nil, errors.New("not a LightGBM text model: first line is not \"tree\"")
	}
	i++

	// Header: key=value lines up to the first Tree=.
	hdr := map[string]string{}
	averageOutput := false
	for ; i < len(lines); i++ {
		ln := strings.TrimSpace(lines[i])
		if strings.HasPrefix(ln, "Tree=") || ln == "end of trees" {
			break
		}
		if ln == "average_output" {
			averageOutput = true
			continue
		}
		if k, v, ok := strings.Cut(ln, "="); ok {
			hdr[k] = v
		}
	}
	if v := hdr["version"]; v != "" && v != "v2" && v != "v3" && v != "v4" {
		return nil, fmt.Errorf("model version %q is not supported (want v2, v3 or v4)", v)
	}
	maxFeature, err := strconv.Atoi(hdr["max_feature_idx"])
	if err != nil || maxFeature < 0 || maxFeature >= maxFeatures {
		return nil, fmt.Errorf("invalid max_feature_idx %q", hdr["max_feature_idx"])
	}
	numFeatures := maxFeature + 1
	numClass, err := strconv.Atoi(hdr["num_class"])
	if err != nil || numClass < 1 || numClass > 1<<16 {
		return nil, fmt.Errorf("invalid num_class %q", hdr["num_class"])
	}
	perIter := numClass
	if s, ok := hdr["num_tree_per_iteration"]; ok {
		if perIter, err = strconv.Atoi(s); err != nil || perIter != numClass {
			return nil, fmt.Errorf("num_tree_per_iteration %q differs from num_class %d: not supported", s, numClass)
		}
	}

	objLine := strings.Fields(hdr["objective"])
	if len(objLine) == 0 {
		return nil, errors.New("model has no objective line (custom objectives are not supported)")
	}
	objective := objLine[0]
	lk, ok := lgbObjectives[objective]
	if !ok {
		return nil, fmt.Errorf("objective %q is not supported", objective)
	}
	sig := 1.0
	for _, opt := range objLine[1:] {
		k, v, _ := strings.Cut(opt, ":")
		switch k {
		case "sigmoid":
			if sig, err = strconv.ParseFloat(v, 64); err != nil || !(sig > 0) || math.IsInf(sig, 0) {
				return nil, fmt.Errorf("invalid sigmoid %q in objective", v)
			}
		case "num_class":
			if n, err := strconv.Atoi(v); err != nil || n != numClass {
				return nil, fmt.Errorf("objective num_class %q differs from num_class=%d", v, numClass)
			}
		case "sqrt":
			if lk == linkIdentity {
				lk = linkSignSquare
			}
		}
	}
	if (lk == linkSoftmax) != (numClass > 1) && objective != "multiclassova" {
		return nil, fmt.Errorf("objective %q with num_class=%d is not supported", objective, numClass)
	}
	if objective == "cross_entropy" {
		sig = 1 // its transform is the plain logistic function
	}

	var names []string
	if s := hdr["feature_names"]; s != "" {
		names = strings.Fields(s)
		if len(names) != numFeatures {
			return nil, fmt.Errorf("%d feature_names for max_feature_idx=%d", len(names), maxFeature)
		}
	}

	f := &lgbForest{classes: numClass, divisor: 1}
	for i < len(lines) {
		ln := strings.TrimSpace(lines[i])
		if ln == "end of trees" {
			break
		}
		if !strings.HasPrefix(ln, "Tree=") {
			i++
			continue
		}
		id := ln[len("Tree="):]
		i++
		kv := map[string]string{}
		for ; i < len(lines); i++ {
			ln := strings.TrimSpace(lines[i])
			if ln == "" || strings.HasPrefix(ln, "Tree=") || ln == "end of trees" {
				break
			}
			if k, v, ok := strings.Cut(ln, "="); ok {
				kv[k] = v
			}
		}
		if err := f.addTree(kv, numFeatures); err != nil {
			//lint:ignore ST1005 the error names the model file's own field, Tree=N
			return nil, fmt.Errorf("Tree=%s: %w", id, err)
		}
	}
	if len(f.roots) == 0 {
		return nil, errors.New("model has no trees")
	}
	if len(f.roots)%numClass != 0 {
		return nil, fmt.Errorf("%d trees is not a multiple of num_class=%d", len(f.roots), numClass)
	}
	f.pad()
	if averageOutput {
		f.divisor = float64(f.numTrees / numClass)
	}
	return &Model{
		objective:    objective,
		numFeatures:  numFeatures,
		featureNames: names,
		numClass:     numClass,
		link:         lk,
		sigmoid:      sig,
		lgb:          f,
	}, nil
}

func (f *lgbForest) addTree(kv map[string]string, numFeatures int) error {
	if kv["is_linear"] == "1" {
		return errors.New("linear trees (linear_tree=true) are not supported: retrain with linear_tree=false")
	}
	numLeaves, err := strconv.Atoi(kv["num_leaves"])
	if err != nil || numLeaves < 1 || numLeaves > 1<<24 {
		return fmt.Errorf("invalid num_leaves %q", kv["num_leaves"])
	}
	leafValues, err := floats(kv["leaf_value"])
	if err != nil {
		return fmt.Errorf("leaf_value: %w", err)
	}
	if len(leafValues) != numLeaves {
		return fmt.Errorf("%d leaf_value for num_leaves=%d", len(leafValues), numLeaves)
	}
	if len(f.nodes) > math.MaxInt32-2*numLeaves {
		return errors.New("model too large")
	}
	base := int32(len(f.nodes))
	inner := numLeaves - 1
	if inner == 0 {
		// A tree of one leaf: LightGBM scores leaf 0.
		f.nodes = append(f.nodes, lgbNode{value: leafValues[0], kids: [2]int32{base, base}})
		f.roots = append(f.roots, base)
		f.addDepth(len(f.roots)-1, 0)
		return nil
	}
	feats, err1 := ints(kv["split_feature"])
	thr, err2 := floats(kv["threshold"])
	dtypes, err3 := ints(kv["decision_type"])
	lefts, err4 := ints(kv["left_child"])
	rights, err5 := ints(kv["right_child"])
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return err
	}
	if len(feats) != inner || len(thr) != inner || len(dtypes) != inner || len(lefts) != inner || len(rights) != inner {
		return fmt.Errorf("split arrays do not have num_leaves-1=%d entries", inner)
	}

	// Categorical splits: threshold is an index into cat_boundaries, which
	// delimits that split's bitset in cat_threshold.
	var catBase int
	if nc, _ := strconv.Atoi(kv["num_cat"]); nc > 0 {
		bounds, err := ints(kv["cat_boundaries"])
		if err != nil {
			return fmt.Errorf("cat_boundaries: %w", err)
		}
		words, err := uint32s(kv["cat_threshold"])
		if err != nil {
			return fmt.Errorf("cat_threshold: %w", err)
		}
		if len(bounds) != nc+1 || bounds[0] != 0 || bounds[nc] != len(words) {
			return errors.New("cat_boundaries do not match num_cat and cat_threshold")
		}
		if len(f.catBits)+len(words) > maxCatWords {
			return errors.New("categorical splits too large")
		}
		catBase = len(f.catRange)
		off := uint32(len(f.catBits))
		f.catBits = append(f.catBits, words...)
		for j := 0; j < nc; j++ {
			if bounds[j+1] < bounds[j] {
				return errors.New("cat_boundaries not increasing")
			}
			f.catRange = append(f.catRange, catRange{off: off + uint32(bounds[j]), n: uint32(bounds[j+1] - bounds[j])})
		}
	}

	// Internal node j is at base+j, leaf k at base+inner+k; LightGBM marks
	// a leaf child as ^k.
	child := func(c int) (int32, error) {
		if c < 0 {
			c = ^c
			if c >= numLeaves {
				return 0, fmt.Errorf("leaf child %d out of range", c)
			}
			return base + int32(inner+c), nil
		}
		if c >= inner {
			return 0, fmt.Errorf("child %d out of range", c)
		}
		return base + int32(c), nil
	}
	for j := 0; j < inner; j++ {
		l, err := child(lefts[j])
		if err != nil {
			return err
		}
		r, err := child(rights[j])
		if err != nil {
			return err
		}
		if feats[j] < 0 || feats[j] >= numFeatures {
			return fmt.Errorf("node %d splits on feature %d, model has %d features", j, feats[j], numFeatures)
		}
		if dtypes[j] < 0 || dtypes[j] > 255 {
			return fmt.Errorf("invalid decision_type %d", dtypes[j])
		}
		nd := lgbNode{value: thr[j], feat: int32(feats[j]), kids: [2]int32{l, r}}
		dt := dtypes[j]
		defaultRight := dt&lgbDefaultLeftMask == 0
		zeroRight := !(0 <= thr[j]) // LightGBM scores near-zero inputs as 0
		switch (dt >> 2) & 3 {
		case lgbMissingNone: // NaN is 0
			if zeroRight {
				nd.flags |= lgbFlagNaNRight | lgbFlagZeroRight
			}
		case lgbMissingZero: // NaN is 0, and 0 is missing
			if defaultRight {
				nd.flags |= lgbFlagNaNRight | lgbFlagZeroRight
			}
		case lgbMissingNaN:
			if defaultRight {
				nd.flags |= lgbFlagNaNRight
			}
			if zeroRight {
				nd.flags |= lgbFlagZeroRight
			}
		default:
			return fmt.Errorf("node %d: unknown missing type in decision_type %d", j, dt)
		}
		if dt&lgbCategoricalMask != 0 {
			nd.flags = lgbFlagCategorical
			ci := thr[j]
			if !(ci >= 0) || ci != math.Trunc(ci) || int(ci)+catBase >= len(f.catRange) {
				return fmt.Errorf("node %d: categorical threshold %v out of range", j, ci)
			}
			nd.value = float64(int(ci) + catBase)
		}
		f.nodes = append(f.nodes, nd)
	}
	for _, v := range leafValues {
		self := int32(len(f.nodes))
		f.nodes = append(f.nodes, lgbNode{value: v, kids: [2]int32{self, self}})
	}
	nodes := f.nodes
	depth, err := checkTree(int(base), len(nodes),
		func(i int) (int, int) { return int(nodes[i].kids[0]), int(nodes[i].kids[1]) },
		func(i int) int { return int(nodes[i].feat) },
		numFeatures)
	if err != nil {
		return err
	}
	f.roots = append(f.roots, base)
	f.addDepth(len(f.roots)-1, depth)
	return nil
}

// pad fills the last group of lanes with a zero leaf.
func (f *lgbForest) pad() {
	f.nodes = padLanes(&f.treeLanes, f.nodes, func(z int32) lgbNode { return lgbNode{kids: [2]int32{z, z}} })
}

func floats(s string) ([]float64, error) {
	fs := strings.Fields(s)
	out := make([]float64, len(fs))
	for i, v := range fs {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, err
		}
		out[i] = x
	}
	return out, nil
}

func ints(s string) ([]int, error) {
	fs := strings.Fields(s)
	out := make([]int, len(fs))
	for i, v := range fs {
		x, err := strconv.Atoi(v)
		if err != nil {
			return nil, err
		}
		out[i] = x
	}
	return out, nil
}

func uint32s(s string) ([]uint32, error) {
	fs := strings.Fields(s)
	out := make([]uint32, len(fs))
	for i, v := range fs {
		x, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, err
		}
		out[i] = uint32(x)
	}
	return out, nil
}
