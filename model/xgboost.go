package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// xgbForest scores XGBoost gbtree and dart models the way XGBoost's CPU
// predictor does: inputs are compared as float32 (go left when
// float32(x) < split_condition) and each class's margin is accumulated in
// float32, base score first, then the trees in file order. That makes the
// margins equal to XGBoost's bit for bit rather than merely close.
type xgbForest struct {
	nodes []xgbNode
	treeLanes
	class     []int32   // output group of each tree (tree_info)
	base      []float32 // base margin per class
	catBits   []uint32  // bitsets of categorical splits, concatenated
	catRanges []catRange
}

// xgbNode is one node. A leaf's children are itself, so stepping past a
// leaf stays on it: trees are walked a fixed number of steps with no
// "is this a leaf?" branch.
type xgbNode struct {
	cond float32  // split condition; leaf value; for categorical splits the index into catRanges
	feat uint32   // feature index | xgbDefaultRight | xgbCategorical
	kids [2]int32 // left, right: absolute indexes into nodes
}

const (
	xgbDefaultRight = 1 << 31
	xgbCategorical  = 1 << 30
	xgbFeatureMask  = 1<<30 - 1
)

// catRange is one categorical split's bitset: catBits[off : off+n].
type catRange struct{ off, n uint32 }

// maxCatWords bounds the memory of all categorical bitsets of a model
// (16 MiB), so a malformed file cannot make Parse allocate without limit.
const maxCatWords = 1 << 22

// xgbMaxCat mirrors XGBoost's OutOfRangeCat: a category at or above it (or
// negative) is invalid and goes left.
const xgbMaxCat = 16777216

// lanes is how many trees are walked side by side. A tree walk is a chain
// of dependent loads; interleaving independent chains keeps the CPU busy
// while each waits, and the steps have no data-dependent branches for the
// predictor to miss.
const lanes = 4

func (f *xgbForest) margin(x []float64, out []float64) {
	k := len(f.base)
	for c := 0; c < k; c++ {
		out[c] = float64(f.base[c])
	}
	nodes, roots := f.nodes, f.roots
	acc := f.base[0]
	for g, depth := range f.depth {
		t := g * lanes
		a, b, c, d := roots[t], roots[t+1], roots[t+2], roots[t+3]
		for s := depth; s > 0; s-- {
			a, b, c, d = f.step(a, x), f.step(b, x), f.step(c, x), f.step(d, x)
		}
		leaves := [lanes]float32{nodes[a].cond, nodes[b].cond, nodes[c].cond, nodes[d].cond}
		n := min(lanes, f.numTrees-t)
		if k == 1 {
			for _, v := range leaves[:n] {
				acc += v
			}
			continue
		}
		for j, v := range leaves[:n] {
			cl := f.class[t+j]
			out[cl] = float64(float32(out[cl]) + v)
		}
	}
	if k == 1 {
		out[0] = float64(acc)
	}
}

// step moves one level down from node i.
func (f *xgbForest) step(i int32, x []float64) int32 {
	nd := &f.nodes[i]
	v := x[nd.feat&xgbFeatureMask]
	if nd.feat&xgbCategorical != 0 {
		return nd.kids[f.categoryRight(nd, v)]
	}
	missing := b2i(v != v)
	notLess := b2i(!(float32(v) < nd.cond))
	right := missing&int(nd.feat>>31) | (1^missing)&notLess
	return nd.kids[right]
}

// categoryRight returns 1 when the node sends v right: missing values by
// default_left, categories in the node's set right, all others (including
// invalid ones: negative, too large) left.
func (f *xgbForest) categoryRight(nd *xgbNode, v float64) int {
	if v != v {
		return int(nd.feat >> 31)
	}
	c32 := float32(v)
	if c32 < 0 || c32 >= xgbMaxCat {
		return 0
	}
	c := uint32(c32)
	r := f.catRanges[int(nd.cond)]
	w := c / 32
	if w >= r.n {
		return 0
	}
	return int(f.catBits[r.off+w] >> (c % 32) & 1)
}

// b2i compiles to a SETcc: 1 for true, 0 for false.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// xgbJSON is the part of XGBoost's save_model JSON that scoring needs.
type xgbJSON struct {
	Learner *struct {
		FeatureNames      []string        `json:"feature_names"`
		GradientBooster   json.RawMessage `json:"gradient_booster"`
		LearnerModelParam struct {
			BaseScore  string `json:"base_score"`
			NumClass   string `json:"num_class"`
			NumFeature string `json:"num_feature"`
			NumTarget  string `json:"num_target"`
		} `json:"learner_model_param"`
		Objective struct {
			Name string `json:"name"`
		} `json:"objective"`
	} `json:"learner"`
}

type xgbBooster struct {
	Name       string        `json:"name"`
	Model      *xgbTreeModel `json:"model"`       // gbtree
	GBTree     *xgbBooster   `json:"gbtree"`      // dart wraps a gbtree
	WeightDrop []jsonFloat32 `json:"weight_drop"` // dart
}

type xgbTreeModel struct {
	Trees    []xgbTreeJSON `json:"trees"`
	TreeInfo []int         `json:"tree_info"`
}

type xgbTreeJSON struct {
	LeftChildren       []int32       `json:"left_children"`
	RightChildren      []int32       `json:"right_children"`
	SplitIndices       []int64       `json:"split_indices"`
	SplitConditions    []jsonFloat32 `json:"split_conditions"`
	DefaultLeft        []jsonBool    `json:"default_left"`
	SplitType          []int         `json:"split_type"`
	Categories         []int64       `json:"categories"`
	CategoriesNodes    []int         `json:"categories_nodes"`
	CategoriesSegments []int64       `json:"categories_segments"`
	CategoriesSizes    []int64       `json:"categories_sizes"`
	TreeParam          struct {
		NumNodes       string `json:"num_nodes"`
		SizeLeafVector string `json:"size_leaf_vector"`
	} `json:"tree_param"`
}

// jsonFloat32 is a float32 that also reads the non-finite values XGBoost
// writes as bare NaN, Infinity and -Infinity (XGBoost 2.x does for the
// split_conditions of categorical splits), once quoteNonFinite has quoted
// them.
type jsonFloat32 float32

func (f *jsonFloat32) UnmarshalJSON(data []byte) error {
	s := string(data)
	if len(s) > 1 && s[0] == '"' {
		s = s[1 : len(s)-1]
	}
	v, err := strconv.ParseFloat(s, 32)
	if err != nil {
		return fmt.Errorf("invalid number %s", data)
	}
	*f = jsonFloat32(v)
	return nil
}

// quoteNonFinite turns the bare NaN, Infinity and -Infinity that XGBoost's
// JSON writer emits (not JSON) into strings, outside string literals.
func quoteNonFinite(data []byte) []byte {
	if !bytes.Contains(data, []byte("NaN")) && !bytes.Contains(data, []byte("Infinity")) {
		return data
	}
	out := make([]byte, 0, len(data)+64)
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			out = append(out, c)
			switch c {
			case '\\':
				if i+1 < len(data) {
					i++
					out = append(out, data[i])
				}
			case '"':
				inString = false
			}
			continue
		}
		switch {
		case c == '"':
			inString = true
		case bytes.HasPrefix(data[i:], []byte("NaN")):
			out = append(out, `"NaN"`...)
			i += len("NaN") - 1
			continue
		case bytes.HasPrefix(data[i:], []byte("Infinity")):
			out = append(out, `"Infinity"`...)
			i += len("Infinity") - 1
			continue
		case bytes.HasPrefix(data[i:], []byte("-Infinity")):
			out = append(out, `"-Infinity"`...)
			i += len("-Infinity") - 1
			continue
		}
		out = append(out, c)
	}
	return out
}

// jsonBool reads default_left, which XGBoost writes as 0/1 and older
// versions wrote as true/false.
type jsonBool bool

func (b *jsonBool) UnmarshalJSON(data []byte) error {
	switch string(data) {
	case "true", "1":
		*b = true
	case "false", "0":
		*b = false
	default:
		return fmt.Errorf("want 0, 1, true or false, got %s", data)
	}
	return nil
}

// xgbObjective says how an XGBoost objective maps base_score to a margin and
// a margin to a prediction.
type xgbObjective struct {
	baseToMargin func(float32) (float32, error)
	link         link
}

var xgbObjectives = map[string]xgbObjective{
	"binary:logistic":      {xgbLogit, linkSigmoid},
	"reg:logistic":         {xgbLogit, linkSigmoid},
	"binary:logitraw":      {xgbIdentity, linkIdentity}, // its ProbToMargin is the identity
	"reg:squarederror":     {xgbIdentity, linkIdentity},
	"reg:linear":           {xgbIdentity, linkIdentity},
	"reg:squaredlogerror":  {xgbIdentity, linkIdentity},
	"reg:pseudohubererror": {xgbIdentity, linkIdentity},
	"reg:absoluteerror":    {xgbIdentity, linkIdentity},
	"reg:quantileerror":    {xgbIdentity, linkIdentity},
	"count:poisson":        {xgbLog, linkExp},
	"reg:gamma":            {xgbLog, linkExp},
	"reg:tweedie":          {xgbLog, linkExp},
	"multi:softprob":       {xgbIdentity, linkSoftmax},
	"multi:softmax":        {xgbIdentity, linkSoftmax},
}

func xgbIdentity(b float32) (float32, error) { return b, nil }

// xgbLogit is XGBoost's ProbToMargin for logistic objectives, in float32 as
// XGBoost computes it.
func xgbLogit(b float32) (float32, error) {
	if !(b > 0 && b < 1) {
		return 0, fmt.Errorf("base_score %v must be in (0, 1) for a logistic objective", b)
	}
	t := float32(1)/b - float32(1)
	return float32(-math.Log(float64(t))), nil
}

func xgbLog(b float32) (float32, error) {
	if !(b > 0) {
		return 0, fmt.Errorf("base_score %v must be positive for a log-link objective", b)
	}
	return float32(math.Log(float64(b))), nil
}

func parseXGBoost(data []byte) (*Model, error) {
	if s := bytes.TrimLeft(data, " \t\r\n"); len(s) > 0 && s[0] == '{' && isUBJSON(s) {
		return nil, errUBJSON
	}
	data = quoteNonFinite(data)
	var doc xgbJSON
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if doc.Learner == nil {
		return nil, errors.New("no \"learner\" object: not a model written by XGBoost's save_model(\"m.json\")")
	}
	l := doc.Learner
	p := l.LearnerModelParam

	numFeatures, err := atoiParam("num_feature", p.NumFeature, 0)
	if err != nil {
		return nil, err
	}
	if numFeatures <= 0 || numFeatures > maxFeatures {
		return nil, fmt.Errorf("num_feature %d out of range [1, %d]", numFeatures, maxFeatures)
	}
	numClass, err := atoiParam("num_class", p.NumClass, 0)
	if err != nil {
		return nil, err
	}
	if numClass < 0 || numClass > 1<<16 {
		return nil, fmt.Errorf("num_class %d out of range", numClass)
	}
	numClass = max(numClass, 1)
	numTarget, err := atoiParam("num_target", p.NumTarget, 1)
	if err != nil {
		return nil, err
	}
	if numTarget > 1 {
		return nil, fmt.Errorf("multi-target models (num_target=%d) are not supported: train one model per target", numTarget)
	}

	obj, ok := xgbObjectives[l.Objective.Name]
	if !ok {
		return nil, fmt.Errorf("objective %q is not supported (supported: %s)", l.Objective.Name, strings.Join(xgbObjectiveNames(), ", "))
	}
	if (obj.link == linkSoftmax) != (numClass > 1) {
		return nil, fmt.Errorf("objective %q with num_class=%d is not supported", l.Objective.Name, numClass)
	}

	base, err := parseBaseScore(p.BaseScore, numClass, obj.baseToMargin)
	if err != nil {
		return nil, err
	}

	var gb xgbBooster
	if err := json.Unmarshal(l.GradientBooster, &gb); err != nil {
		return nil, fmt.Errorf("invalid gradient_booster: %w", err)
	}
	var (
		tm     *xgbTreeModel
		weight []jsonFloat32
	)
	switch gb.Name {
	case "gbtree":
		tm = gb.Model
	case "dart":
		if gb.GBTree != nil {
			tm = gb.GBTree.Model
		}
		weight = gb.WeightDrop
	case "gblinear":
		return nil, errors.New("booster gblinear is not supported: use gbtree or dart, or export the weights as a logistic model")
	default:
		return nil, fmt.Errorf("booster %q is not supported: use gbtree or dart", gb.Name)
	}
	if tm == nil {
		return nil, fmt.Errorf("booster %s has no tree model", gb.Name)
	}
	if len(tm.TreeInfo) != len(tm.Trees) {
		return nil, fmt.Errorf("tree_info has %d entries for %d trees", len(tm.TreeInfo), len(tm.Trees))
	}
	if weight != nil && len(weight) != len(tm.Trees) {
		return nil, fmt.Errorf("dart weight_drop has %d entries for %d trees", len(weight), len(tm.Trees))
	}

	f := &xgbForest{base: base}
	for t := range tm.Trees {
		c := tm.TreeInfo[t]
		if c < 0 || c >= numClass {
			return nil, fmt.Errorf("tree %d: tree_info class %d out of range [0, %d)", t, c, numClass)
		}
		w := float32(1)
		if weight != nil {
			w = float32(weight[t])
		}
		if err := f.addTree(&tm.Trees[t], w, numFeatures, weight != nil); err != nil {
			return nil, fmt.Errorf("tree %d: %w", t, err)
		}
		f.class = append(f.class, int32(c))
	}

	if len(tm.Trees) == 0 {
		return nil, errors.New("model has no trees")
	}
	f.pad()

	var names []string
	if len(l.FeatureNames) > 0 {
		if len(l.FeatureNames) != numFeatures {
			return nil, fmt.Errorf("%d feature_names for num_feature=%d", len(l.FeatureNames), numFeatures)
		}
		names = l.FeatureNames
	}
	return &Model{
		objective:    l.Objective.Name,
		numFeatures:  numFeatures,
		featureNames: names,
		numClass:     numClass,
		link:         obj.link,
		sigmoid:      1,
		xgb:          f,
	}, nil
}

func xgbObjectiveNames() []string {
	names := make([]string, 0, len(xgbObjectives))
	for n := range xgbObjectives {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// parseBaseScore reads base_score, a probability-space number written as a
// string: "5E-1", or since XGBoost 3.1 a vector "[5E-1]" (one value per class
// for multi-class). It returns the per-class base margins.
func parseBaseScore(s string, numClass int, toMargin func(float32) (float32, error)) ([]float32, error) {
	if s == "" {
		s = "0.5"
	}
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	parts := strings.Split(s, ",")
	if len(parts) != 1 && len(parts) != numClass {
		return nil, fmt.Errorf("base_score has %d values for %d classes", len(parts), numClass)
	}
	base := make([]float32, numClass)
	for c := range base {
		ps := parts[0]
		if len(parts) > 1 {
			ps = parts[c]
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(ps), 32)
		if err != nil {
			return nil, fmt.Errorf("invalid base_score %q: %w", s, err)
		}
		m, err := toMargin(float32(v))
		if err != nil {
			return nil, err
		}
		base[c] = m
	}
	return base, nil
}

func atoiParam(name, s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("invalid %s %q: %w", name, s, err)
	}
	return v, nil
}

// addTree appends one tree's nodes, with leaf values scaled by the dart
// weight w in float32 as XGBoost does at prediction.
func (f *xgbForest) addTree(t *xgbTreeJSON, w float32, numFeatures int, dart bool) error {
	if s := t.TreeParam.SizeLeafVector; s != "" && s != "0" && s != "1" {
		return fmt.Errorf("multi-output trees (size_leaf_vector=%s, multi_strategy=\"multi_output_tree\") are not supported: train with the default multi_strategy=\"one_output_per_tree\"", s)
	}
	n := len(t.LeftChildren)
	if n == 0 {
		return errors.New("tree has no nodes")
	}
	if len(t.RightChildren) != n || len(t.SplitIndices) != n || len(t.SplitConditions) != n || len(t.DefaultLeft) != n {
		return errors.New("node arrays (left_children, right_children, split_indices, split_conditions, default_left) differ in length")
	}
	if t.SplitType != nil && len(t.SplitType) != n {
		return errors.New("split_type length differs from the number of nodes")
	}
	if n > math.MaxInt32-len(f.nodes) {
		return errors.New("model too large")
	}
	base := int32(len(f.nodes))

	// Categorical splits: categories_nodes[i] splits on
	// categories[segments[i] : segments[i]+sizes[i]], the set that goes right.
	catOf := map[int]int{}
	if len(t.CategoriesNodes) > 0 {
		k := len(t.CategoriesNodes)
		if len(t.CategoriesSegments) != k || len(t.CategoriesSizes) != k {
			return errors.New("categories_nodes, categories_segments and categories_sizes differ in length")
		}
		for i, nid := range t.CategoriesNodes {
			seg, size := t.CategoriesSegments[i], t.CategoriesSizes[i]
			if nid < 0 || nid >= n || seg < 0 || size < 0 || seg+size > int64(len(t.Categories)) {
				return fmt.Errorf("categorical split %d out of range", i)
			}
			hi := int64(0)
			for _, c := range t.Categories[seg : seg+size] {
				if c < 0 || c >= xgbMaxCat {
					return fmt.Errorf("category %d out of range", c)
				}
				hi = max(hi, c+1)
			}
			words := uint32((hi + 31) / 32)
			if len(f.catBits)+int(words) > maxCatWords {
				return errors.New("categorical splits too large")
			}
			off := uint32(len(f.catBits))
			f.catBits = append(f.catBits, make([]uint32, words)...)
			for _, c := range t.Categories[seg : seg+size] {
				f.catBits[off+uint32(c/32)] |= 1 << (c % 32)
			}
			catOf[nid] = len(f.catRanges)
			f.catRanges = append(f.catRanges, catRange{off: off, n: words})
		}
	}

	for i := 0; i < n; i++ {
		l, r := t.LeftChildren[i], t.RightChildren[i]
		if l == -1 {
			v := float32(t.SplitConditions[i])
			if dart {
				v = w * v
			}
			self := base + int32(i)
			f.nodes = append(f.nodes, xgbNode{cond: v, kids: [2]int32{self, self}})
			continue
		}
		if l < 0 || r < 0 || int(l) >= n || int(r) >= n || int(l) == i || int(r) == i {
			return fmt.Errorf("node %d has children %d, %d out of range", i, l, r)
		}
		fi := t.SplitIndices[i]
		if fi < 0 || fi >= int64(numFeatures) {
			return fmt.Errorf("node %d splits on feature %d, model has %d features", i, fi, numFeatures)
		}
		nd := xgbNode{cond: float32(t.SplitConditions[i]), feat: uint32(fi), kids: [2]int32{base + l, base + r}}
		if !t.DefaultLeft[i] {
			nd.feat |= xgbDefaultRight
		}
		isCat := t.SplitType != nil && t.SplitType[i] == 1
		if isCat {
			ci, ok := catOf[i]
			if !ok {
				return fmt.Errorf("node %d is a categorical split with no categories", i)
			}
			nd.feat |= xgbCategorical
			nd.cond = float32(ci)
		} else if t.SplitType != nil && t.SplitType[i] != 0 {
			return fmt.Errorf("node %d has unknown split_type %d", i, t.SplitType[i])
		}
		f.nodes = append(f.nodes, nd)
	}
	if len(f.catRanges) >= xgbMaxCat {
		return errors.New("too many categorical splits")
	}
	nodes := f.nodes
	depth, err := checkTree(int(base), len(nodes),
		func(i int) (int, int) { return int(nodes[i].kids[0]), int(nodes[i].kids[1]) },
		func(i int) int { return int(nodes[i].feat & xgbFeatureMask) },
		numFeatures)
	if err != nil {
		return err
	}
	f.roots = append(f.roots, base)
	f.addDepth(len(f.roots)-1, depth)
	return nil
}

// pad fills the last group of lanes with a zero leaf.
func (f *xgbForest) pad() {
	f.nodes = padLanes(&f.treeLanes, f.nodes, func(z int32) xgbNode { return xgbNode{kids: [2]int32{z, z}} })
}
