package segment

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"

	"github.com/pulse-rt/pulse/config"
)

// Kind is the type of a feature's value as rules see it. The zero Kind is
// Any. The stream maps aggregate's feature types onto these.
type Kind int

// The feature kinds.
const (
	// Any is a value whose type is only known at run time (first/last of an
	// arbitrary field): float64, string, bool, []any, map[string]any or nil.
	// Rules may use it in any way; a wrong use fails at run time.
	Any Kind = iota
	// Number is a float64 (counts, sums, averages, timestamps in epoch ms).
	Number
	// String is a string.
	String
	// List is a []any (distinct values, last_n).
	List
)

var kindNames = [...]string{Any: "any", Number: "number", String: "string", List: "list"}

// String returns any, number, string or list.
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ParseKind reads the names String returns.
func ParseKind(s string) (Kind, error) {
	for k, name := range kindNames {
		if s == name {
			return Kind(k), nil
		}
	}
	return Any, fmt.Errorf("unknown kind %q (want any, number, string or list)", s)
}

// exprType is the type the checker gives a feature of kind k.
func (k Kind) exprType() types.Type {
	switch k {
	case Number:
		return types.Float64
	case String:
		return types.String
	case List:
		return types.TypeOf([]any{})
	}
	return types.Any // checked at run time
}

// NowName is the name rules use for the evaluation time, epoch milliseconds.
// No feature may be called that.
const NowName = "now"

// Error is one problem with one segment's rule.
type Error struct {
	Segment string
	// Line and Column locate the problem in the rule text, both from 1;
	// 0 when the problem is not in the text (e.g. a duplicate name).
	Line, Column int
	Msg          string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("segment %q: %s", e.Segment, e.Msg)
	}
	return fmt.Sprintf("segment %q: rule: %s (%d:%d)", e.Segment, e.Msg, e.Line, e.Column)
}

// Errors is every problem Compile found, in config order.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Set is a compiled list of segments for one entity type. It is immutable
// and safe for concurrent use.
type Set struct {
	segs     []compiled
	byName   map[string]int
	byHash   map[uint64]int
	features []string // names the vector is aligned with
	usesNow  bool
	lets     int // the most `let` variables of one rule
	fp       uint64
	pool     sync.Pool // *scratch
}

type compiled struct {
	config.Segment
	prog    *vm.Program
	refs    []int // features the rule reads, to tell a nil input from a bug
	usesNow bool
	hash    uint64 // of the name: the membership encoding's key

	errors  atomic.Uint64
	missing atomic.Uint64
	lastErr atomic.Pointer[error]
}

// scratch is what one Eval needs for itself: a VM (its stack) whose
// Variables are the slots the rules read (see loadFromSlots).
type scratch struct {
	vm vm.VM
}

// Compile compiles every rule once, type-checked against the feature names
// and kinds of the entity the segments belong to (the caller passes the
// segments of one entity, see ForEntity). values passed to Eval must be
// aligned with names. Every problem is reported at once, as Errors.
func Compile(segs []config.Segment, names []string, kinds []Kind) (*Set, error) {
	if len(kinds) != len(names) {
		return nil, fmt.Errorf("segment: %d feature names but %d kinds", len(names), len(kinds))
	}
	featureIndex := make(map[string]int, len(names))
	env := make(types.Map, len(names)+1)
	for i, n := range names {
		if n == NowName {
			return nil, fmt.Errorf("segment: a feature may not be called %q: rules use it for the evaluation time", NowName)
		}
		if _, dup := featureIndex[n]; dup {
			return nil, fmt.Errorf("segment: duplicate feature name %q", n)
		}
		featureIndex[n] = i
		env[n] = kinds[i].exprType()
	}
	env[NowName] = types.Float64

	s := &Set{
		segs:     make([]compiled, len(segs)),
		byName:   make(map[string]int, len(segs)),
		byHash:   make(map[uint64]int, len(segs)),
		features: append([]string(nil), names...),
	}
	var errs Errors
	fail := func(seg string, line, col int, format string, args ...any) {
		errs = append(errs, &Error{Segment: seg, Line: line, Column: col, Msg: fmt.Sprintf(format, args...)})
	}
	for i, seg := range segs {
		c := &s.segs[i]
		c.Segment = seg
		c.hash = hashName(seg.Name)
		if seg.Name == "" {
			fail(fmt.Sprintf("#%d", i), 0, 0, "name is required")
		} else if _, dup := s.byName[seg.Name]; dup {
			fail(seg.Name, 0, 0, "duplicate segment name")
		} else if j, dup := s.byHash[c.hash]; dup {
			// Never seen in practice; the encoding needs distinct keys.
			fail(seg.Name, 0, 0, "name hash collides with segment %q: rename one", segs[j].Name)
		} else {
			s.byName[seg.Name] = i
			s.byHash[c.hash] = i
		}
		if strings.TrimSpace(seg.Rule) == "" {
			fail(seg.Name, 0, 0, "rule is required")
			continue
		}
		prog, err := expr.Compile(seg.Rule, expr.Env(env), expr.AsBool())
		if err != nil {
			var fe *file.Error
			if errors.As(err, &fe) {
				fail(seg.Name, fe.Line, fe.Column+1, "%s", fe.Message)
			} else {
				// Whole-rule problems (not a bool) have no position: the rule's start.
				fail(seg.Name, 1, 1, "%v", err)
			}
			continue
		}
		equalityOnNil(prog)
		r, err := loadFromSlots(prog, featureIndex)
		if err != nil {
			var fe *file.Error
			if errors.As(err, &fe) {
				fe = fe.Bind(file.NewSource(seg.Rule))
				fail(seg.Name, fe.Line, fe.Column+1, "%s", fe.Message)
			} else {
				fail(seg.Name, 0, 0, "%v", err)
			}
			continue
		}
		c.refs, c.usesNow = r.features, r.now
		s.usesNow = s.usesNow || r.now
		s.lets = max(s.lets, r.lets)
		c.prog = prog
	}
	if len(errs) > 0 {
		return nil, errs
	}
	s.fp = fingerprint(segs)
	slots := len(names) + 1 + s.lets
	s.pool.New = func() any {
		sc := &scratch{}
		sc.vm.Variables = make([]any, slots)
		return sc
	}
	return s, nil
}

// ForEntity returns the segments of one entity type, in config order.
// config.Load defaults Entity to "user"; an empty Entity counts as that here too.
func ForEntity(segs []config.Segment, entity string) []config.Segment {
	var out []config.Segment
	for _, s := range segs {
		e := s.Entity
		if e == "" {
			e = "user"
		}
		if e == entity {
			out = append(out, s)
		}
	}
	return out
}

// Names returns the segment names in config order; a segment's index in it
// is its bit in a Membership and Change.Index.
func (s *Set) Names() []string {
	names := make([]string, len(s.segs))
	for i := range s.segs {
		names[i] = s.segs[i].Name
	}
	return names
}

// Len is the number of segments.
func (s *Set) Len() int { return len(s.segs) }

// Index returns the position of the named segment.
func (s *Set) Index(name string) (int, bool) {
	i, ok := s.byName[name]
	return i, ok
}

// Segment returns the config of segment i.
func (s *Set) Segment(i int) config.Segment { return s.segs[i].Segment }

// UsesNow reports whether segment i's rule reads `now`. Such a rule can
// change with no event and no window expiry (`now - last_order_at > ...`),
// so it holds only as fresh as the entity's last evaluation.
func (s *Set) UsesNow(i int) bool { return s.segs[i].usesNow }

// Fingerprint identifies the segments' names and rules, whatever their
// order. The stream may store it once to know at start whether the rules
// changed since the memberships it holds were written.
func (s *Set) Fingerprint() uint64 { return s.fp }

// equalityOnNil makes == and != on two strings use the generic comparison,
// which treats nil as a value, instead of the specialised one the compiler
// picks for string-typed operands, which would fail on a missing String
// feature. That keeps `country != "US"` true for a user with no country,
// like `country in ["US"]` is false for them.
func equalityOnNil(p *vm.Program) {
	for i, op := range p.Bytecode {
		if op == vm.OpEqualString {
			p.Bytecode[i] = vm.OpEqual
		}
	}
}

// reads is what a rule reads besides constants.
type reads struct {
	features []int // indexes, to tell a nil input from a bug when it fails
	now      bool
	lets     int // number of its own `let` variables
}

// loadFromSlots makes a rule read features from the VM's variable slots
// instead of the env map: slot i holds feature i, slot len(features) holds
// now, and the rule's own `let` variables move after those. Eval then copies
// the vector into the slots, where an env map would cost a hash insert per
// feature and a lookup per read (3/4 of Eval's time before this; Eval is
// 2.2 times faster with slots).
//
// This edits expr's bytecode, so it refuses a rule that reads the env in
// any other way. TestSlotsMatchExpr compares the result with expr's own
// evaluation, to catch an expr version that compiles names differently.
func loadFromSlots(p *vm.Program, features map[string]int) (r reads, err error) {
	base := len(features) + 1
	for i, op := range p.Bytecode {
		switch op {
		case vm.OpStore, vm.OpLoadVar:
			r.lets = max(r.lets, p.Arguments[i]+1)
			p.Arguments[i] += base
		case vm.OpLoadFast:
			name, _ := p.Constants[p.Arguments[i]].(string)
			slot, ok := features[name]
			if name == NowName {
				slot, ok, r.now = len(features), true, true
			} else if ok && !contains(r.features, slot) {
				r.features = append(r.features, slot)
			}
			if !ok {
				return r, fmt.Errorf("internal error: rule reads %q from the env", name)
			}
			p.Bytecode[i] = vm.OpLoadVar
			p.Arguments[i] = slot
		case vm.OpLoadEnv:
			return r, &file.Error{Location: p.Locations()[i], Message: "$env is not available in segment rules: name the feature"}
		case vm.OpLoadConst, vm.OpLoadField, vm.OpLoadMethod:
			return r, fmt.Errorf("internal error: rule reads the env with opcode %v", op)
		}
	}
	return r, nil
}

func hashName(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// fingerprint sums a hash of each (name, rule), so order does not matter.
func fingerprint(segs []config.Segment) uint64 {
	var sum uint64
	for _, s := range segs {
		h := fnv.New64a()
		h.Write([]byte(s.Name))
		h.Write([]byte{0})
		h.Write([]byte(s.Rule))
		sum += h.Sum64()
	}
	return sum
}

func contains[T comparable](xs []T, x T) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}
