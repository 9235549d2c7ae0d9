package segment

import (
	"errors"
	"fmt"
	"math/bits"
	"time"

	"github.com/expr-lang/expr/file"
)

// Membership is the set of segments an entity is in: bit i is segment i of
// the Set that made it. The zero value (nil) is "in no segment". A
// Membership is positional, so only store it with Set.AppendMembership.
type Membership []uint64

// Has reports whether segment i is a member.
func (m Membership) Has(i int) bool {
	w := i / 64
	return i >= 0 && w < len(m) && m[w]&(1<<(i%64)) != 0
}

// Count is the number of segments the entity is in.
func (m Membership) Count() int {
	n := 0
	for _, w := range m {
		n += bits.OnesCount64(w)
	}
	return n
}

// Equal reports whether m and o hold the same members; a missing word is 0.
func (m Membership) Equal(o Membership) bool {
	for i := 0; i < max(len(m), len(o)); i++ {
		if word(m, i) != word(o, i) {
			return false
		}
	}
	return true
}

// Members returns the names of the segments in m, in segment order.
func (s *Set) Members(m Membership) []string {
	var names []string
	for i := range s.segs {
		if m.Has(i) {
			names = append(names, s.segs[i].Name)
		}
	}
	return names
}

func word(m Membership, i int) uint64 {
	if i < len(m) {
		return m[i]
	}
	return 0
}

// sized returns dst cleared to exactly n segments' words, reusing its memory.
func sized(dst Membership, n int) Membership {
	words := (n + 63) / 64
	if cap(dst) < words {
		return make(Membership, words)
	}
	dst = dst[:words]
	clear(dst)
	return dst
}

func (m Membership) set(i int) { m[i/64] |= 1 << (i % 64) }

// Eval evaluates every rule against one entity's vector at time now and
// returns the segments it is in, reusing dst's memory. values must be aligned
// with the feature names given to Compile; each is float64, string, []any or
// nil (no value yet), and must not change during the call.
//
// A rule that fails at run time is false (see the package doc for nil); the
// failure is counted in Stats. Eval is safe for concurrent use. It allocates
// nothing unless a rule reads now or computes new numbers (arithmetic boxes
// its float64 results), or fails.
func (s *Set) Eval(values []any, now time.Time, dst Membership) Membership {
	if len(values) != len(s.features) {
		panic(fmt.Sprintf("segment: Eval with %d values, want %d (one per feature)", len(values), len(s.features)))
	}
	dst = sized(dst, len(s.segs))
	sc := s.pool.Get().(*scratch)
	vars := sc.vm.Variables
	copy(vars, values)
	if s.usesNow {
		vars[len(values)] = float64(now.UnixMilli())
	}
	for i := range s.segs {
		c := &s.segs[i]
		out, err := sc.vm.Run(c.prog, nil)
		if err != nil {
			s.failed(c, values, err)
			continue
		}
		if b, ok := out.(bool); ok {
			if b {
				dst.set(i)
			}
		} else {
			s.failed(c, values, fmt.Errorf("rule returned %T, want bool", out))
		}
	}
	clear(vars) // do not keep the caller's lists alive
	s.pool.Put(sc)
	return dst
}

func (s *Set) failed(c *compiled, values []any, err error) {
	for _, j := range c.refs {
		if values[j] == nil {
			c.missing.Add(1)
			return
		}
	}
	c.errors.Add(1)
	var fe *file.Error
	if errors.As(err, &fe) {
		// One line for logs and metrics: expr's snippet is multi-line.
		err = fmt.Errorf("segment %q: rule: %s (%d:%d)", c.Name, fe.Message, fe.Line, fe.Column+1)
	} else {
		err = fmt.Errorf("segment %q: rule: %w", c.Name, err)
	}
	c.lastErr.Store(&err)
}

// Stats are one segment's run-time failures since Compile.
type Stats struct {
	// Errors counts evaluations that failed with every input present: a
	// rule that misuses an Any feature or indexes past a list's end.
	Errors uint64
	// Missing counts evaluations that failed because a feature the rule
	// reads had no value (nil): expected for new entities.
	Missing uint64
	// LastError is the most recent of Errors, or nil.
	LastError error
}

// Stats returns segment i's failure counts.
func (s *Set) Stats(i int) Stats {
	c := &s.segs[i]
	st := Stats{Errors: c.errors.Load(), Missing: c.missing.Load()}
	if p := c.lastErr.Load(); p != nil {
		st.LastError = *p
	}
	return st
}

// Errors is the sum of Stats.Errors over all segments: a metric worth an
// alert, since it means a rule is wrong for the data it sees.
func (s *Set) Errors() uint64 {
	var n uint64
	for i := range s.segs {
		n += s.segs[i].errors.Load()
	}
	return n
}

// Change is one segment an entity entered or exited.
type Change struct {
	Segment string
	Index   int // position in the Set
	Enter   bool
}

// The values of Record.Change.
const (
	ChangeEnter = "enter"
	ChangeExit  = "exit"
)

// Type is ChangeEnter or ChangeExit.
func (c Change) Type() string {
	if c.Enter {
		return ChangeEnter
	}
	return ChangeExit
}

func (c Change) String() string { return c.Type() + " " + c.Segment }

// Diff appends to dst[:0] the segments entered or exited going from old to
// new, in segment order. Both come from this Set (Eval or
// DecodeMembership); nil is "in no segment".
func (s *Set) Diff(old, new Membership, dst []Change) []Change {
	dst = dst[:0]
	words := (len(s.segs) + 63) / 64
	for w := range words {
		n := word(new, w)
		x := word(old, w) ^ n
		for x != 0 {
			b := bits.TrailingZeros64(x)
			x &= x - 1
			i := w*64 + b
			if i >= len(s.segs) {
				break
			}
			dst = append(dst, Change{Segment: s.segs[i].Name, Index: i, Enter: n&(1<<b) != 0})
		}
	}
	return dst
}
