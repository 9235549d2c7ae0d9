// Package aggregate is Pulse's windowed aggregation: feature definitions
// from pulse.yaml compile into a Set; each entity keeps a State of partial
// aggregates (tiles); the Set folds events into a State and computes the
// feature values as of any time. The stream processor and the backfill run
// this one implementation, which is what keeps training and serving equal.
//
// Pure: no I/O, no goroutines, no clocks — every time is an argument.
//
//	set, err := aggregate.Compile(cfg.Features, aggregate.Options{AllowedLateness: 7 * 24 * time.Hour})
//	st := set.NewState()                       // or set.DecodeState(stored)
//	changed, err := set.Apply(st, ev)          // errors.Is(err, aggregate.ErrTooLate)
//	vals := set.Values(st, now, vals)          // parallel to set.Names(), set.Kinds()
//	at, ok := set.NextChange(st, now)          // when to recompute with no event
//	set.Expire(st, now)                        // drop tiles no longer needed
//	stored = st.AppendBinary(stored[:0])
//
// One Set holds one entity's features: Compile takes features of a single
// entity (Entity "" means "user"), CompileAll a whole config, giving a Set
// per entity. Compile errors are Errors, a list of FeatureError naming the
// feature, its config line and the key at fault.
//
// A Set is immutable and safe for concurrent use by many goroutines, each
// applying to its own States; a State is used by one goroutine at a time.
//
// The window rule, lateness, distinct's exact-then-HyperLogLog bound and
// derived features are specified for users in docs/features.md.
package aggregate
