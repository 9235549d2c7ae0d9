// Package rfm is the pure part of Pulse's automatic RFM groups: scores by
// quantile boundaries, the group table, and the mergeable summary the
// stream tasks publish so that every task scores with the same boundaries.
//
// It does no I/O and starts no goroutines. The stream (stream/rfm*.go)
// collects each partition's values, publishes a [Summary] per partition and
// one merged [Boundaries] per refresh on a compacted topic, and calls
// [Boundaries.Scores] and [Match] after every change of an entity's vector.
//
// # Scores
//
// Each dimension's score is the entity's quantile among the buyers
// (entities whose recency is a number >= 0): with S scores the boundaries
// are the population's quantiles at 1/S, 2/S, ..., (S-1)/S, computed as
// numpy.quantile computes them by default (linear interpolation between
// closest ranks). A value v scores 1 + the number of boundaries below it
// (v > b), so a value on a boundary takes the lower score; recency scores
// the other way round (fewer days is better): S - that number.
//
// # Summaries and rank error
//
// A partition's [Summary] of one dimension keeps every value while it has
// at most K of them (then merging is exact: the boundaries are numpy's),
// and otherwise K points, its own quantiles at (i+0.5)/K, each standing
// for N/K values. [Merge] takes the weighted quantile of all partitions'
// points. Each point is within N_p/(2K) ranks of where it stands in its
// partition, so a merged boundary is within N/K ranks (a fraction 1/K of
// the population; K = 1024 gives 0.1 %) of the exact quantile. The tests
// check both against numpy (rfm/testdata/quantiles.json, made by
// scripts/rfm/quantiles.py).
//
// # Groups
//
// A [Group] names a rectangle of R, F and M scores; the first group whose
// ranges hold the entity's scores is its group. [DefaultGroups] is the
// table documented in docs/segments.md: eleven groups over R and F (M any),
// non-overlapping and covering all 25 cells, so order does not matter for
// it; entities with no order are [Prospects].
package rfm
