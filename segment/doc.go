// Package segment evaluates live segments: named boolean rules over an
// entity's feature vector, written in expr-lang/expr.
//
// It sits between aggregate and the outputs in the stream: after every change
// of an entity's vector (a new event, or a timer that slid a window) the
// stream calls [Set.Eval] with the new values, [Set.Diff] against the
// entity's stored [Membership], and writes one [Record] per [Change] to the
// pulse.segments topic. The scorer uses the same Set to answer "is this user
// in segment X" from a stored vector.
//
// Like aggregate, the package is pure: no I/O, no goroutines. A [Set] is
// immutable after [Compile] and safe for concurrent use; each Eval borrows a
// VM from a pool and allocates nothing for rules that only compare features
// (reading now, or arithmetic, allocates the boxed float64 results). Twenty
// typical rules take about 0.6 µs per vector on one core (BenchmarkEval).
//
// Per entity, the stream does:
//
//	old, stale, err := set.DecodeMembership(stored, old)   // stale: rules changed
//	m = set.Eval(values, now, m)                            // after every vector change
//	for _, c := range set.Diff(old, m, changes) {
//		write(segment.NewRecord(c, "user", id, at, cause, nil))
//	}
//	stored = set.AppendMembership(stored[:0], m)            // with the feature state
//
// # Rules
//
// A rule sees every feature of its entity by name and `now`, the evaluation
// time in epoch milliseconds (float64). Feature types are known when the rule
// is compiled ([Kind]): a Number is float64, a String a string, a List a
// []any and an Any is checked only at run time. [Compile] therefore reports
// typos, type errors (`country > 5` with a String country) and non-boolean
// rules when the config is loaded, with the segment's name and the position
// in the rule; `pulse validate` adds the config line from config.Segment.Line.
//
// # Missing values
//
// A feature with no value yet is nil. The matching operators treat nil as a
// value that matches nothing but nil: `country == nil` is true for a user
// with no country, `country != "US"` too, and `country in [...]`,
// `contains`, `startsWith`, `endsWith` and `matches` are false. Every other
// use of nil (`<`, `+`, `len`, indexing, ...) makes the whole rule false:
// the entity is not a member, whatever `!` or `||` surround the failing
// part. Such evaluations are counted as Missing in [Set.Stats], not as
// errors. Write a default with `??` to decide otherwise:
// `(max_order_30d ?? 0) < 100`.
//
// # Membership encoding
//
// [Set.AppendMembership] stores a membership by segment name (a 64-bit hash
// of it), never by position, together with a fingerprint of every segment's
// name and rule. [Set.DecodeMembership] maps it onto the current Set:
// reordered segments keep their members, removed segments vanish (no exit
// record: the segment no longer exists to leave), and when any rule was
// added, removed or changed the result is flagged stale, meaning the caller
// must evaluate the entity again and Diff against the decoded membership.
// That re-evaluation is what makes a changed rule take effect for existing
// members: they exit if the new rule no longer holds, others enter.
package segment
