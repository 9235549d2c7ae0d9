package model

// treeLanes is the tree bookkeeping both forests share: trees are walked
// lanes at a time, so roots are padded to a multiple of lanes and each group
// records how many steps its deepest leaf takes.
type treeLanes struct {
	roots    []int32 // padded to a multiple of lanes with a zero leaf
	numTrees int
	depth    []int32 // per group of lanes trees: steps to the deepest leaf
}

// addDepth records tree t's depth in its group of lanes.
func (l *treeLanes) addDepth(t, depth int) {
	if t%lanes == 0 {
		l.depth = append(l.depth, 0)
	}
	g := &l.depth[len(l.depth)-1]
	*g = max(*g, int32(depth))
}

// padLanes fills the last group of lanes with a zero leaf, made by leaf
// from its own index, appended to nodes.
func padLanes[N any](l *treeLanes, nodes []N, leaf func(self int32) N) []N {
	l.numTrees = len(l.roots)
	if len(l.roots)%lanes == 0 {
		return nodes
	}
	z := int32(len(nodes))
	nodes = append(nodes, leaf(z))
	for len(l.roots)%lanes != 0 {
		l.roots = append(l.roots, z)
	}
	return nodes
}
