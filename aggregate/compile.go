package aggregate

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"

	"github.com/pulse-rt/pulse/config"
)

// Options tune a compiled Set.
type Options struct {
	// AllowedLateness is how far behind the newest event seen by a State an
	// event may be and still be applied; older events get ErrTooLate.
	// 0 (the default) means no limit, and then only Expire bounds memory.
	AllowedLateness time.Duration
}

// DefaultEntity is the entity of a feature whose Entity is empty.
const DefaultEntity = "user"

// Kind is the type of a feature's values.
type Kind uint8

// The kinds of feature values.
const (
	Any    Kind = iota // any JSON value (first/last of a property, derived of unknown type)
	Number             // float64
	String             // string
	List               // []any
)

func (k Kind) String() string {
	switch k {
	case Number:
		return "number"
	case String:
		return "string"
	case List:
		return "list"
	}
	return "any"
}

// FeatureError is one problem with one feature definition.
type FeatureError struct {
	Name string // the feature's name
	Line int    // config.Feature.Line: the feature's line in pulse.yaml, 0 when unknown
	Key  string // the config key at fault: agg, field, where, expr, window, n, entity, type, name
	Msg  string
}

func (e FeatureError) Error() string {
	if e.Key != "" {
		return fmt.Sprintf("feature %q: %s: %s", e.Name, e.Key, e.Msg)
	}
	return fmt.Sprintf("feature %q: %s", e.Name, e.Msg)
}

// Errors is every problem Compile found, in config order.
type Errors []FeatureError

func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, fe := range e {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// agg is the compiled aggregation of a feature.
type agg uint8

const (
	aggInvalid agg = iota // a definition with errors
	aggDerived
	aggCount
	aggSum
	aggAvg
	aggMin
	aggMax
	aggFirst
	aggLast
	aggDistinct
	aggLastN
	aggLastByKey
)

var aggNames = map[string]agg{
	"count": aggCount, "sum": aggSum, "avg": aggAvg, "min": aggMin, "max": aggMax,
	"first": aggFirst, "last": aggLast, "distinct": aggDistinct, "last_n": aggLastN,
	"last_by_key": aggLastByKey,
}

// Set is a compiled list of one entity's features. It is immutable and safe
// for concurrent use; each State must be used by one goroutine at a time.
type Set struct {
	entity string
	opts   Options
	names  []string
	kinds  []Kind
	index  map[string]int
	feats  []feature // one per name, config order
	aggs   []int     // indexes into feats of aggregated features, in order; State.f is parallel
	// groups are the distinct event filters; each lists the features it feeds.
	groups  []group
	derived []int         // indexes into feats of derived features, in dependency order
	steps   []derivedStep // derived, as evalDerived runs them for Values and Derive
	usesNow bool
	fields  int   // distinct field paths, for the per-Apply lookup cache
	self    []int // self[i] == i: Inputs of an aggregated feature

	wherePool  sync.Pool // *whereScratch
	valuesPool sync.Pool // *valuesScratch
}

// feature is one compiled definition.
type feature struct {
	def    config.Feature
	agg    agg
	window int64 // ms; 0 = lifetime
	tile   int64 // ms; window/60
	n      int   // last_n length
	field  fieldPath
	fieldN int  // index of field in the lookup cache, -1 for none
	tsVal  bool // the field is "timestamp": the value is the event time
	slot   int  // index into State.f (aggregated features)
	fp     uint64
	prog   *vm.Program // derived
	// reads are the features a derived expr names (indexes into Set.feats);
	// readsNow says it also names `now`.
	reads    []int
	readsNow bool
	// closure and inputs are DeriveOne's steps and Inputs (derived only).
	closure []derivedStep
	inputs  []int
}

// group is one distinct (event, type, where) filter.
type group struct {
	event string // "" = any
	typ   string // "" = any
	where *vm.Program
	feats []int // indexes into Set.feats
}

// Compile compiles the features of one entity. Every problem is reported at
// once as Errors. All defs must share an entity (empty means "user"); use
// CompileAll for a config holding several.
func Compile(defs []config.Feature, opts Options) (*Set, error) {
	var errs Errors
	entity := ""
	for _, d := range defs {
		e := entityOf(d)
		if entity == "" {
			entity = e
		} else if e != entity {
			errs = append(errs, FeatureError{Name: d.Name, Line: d.Line, Key: "entity",
				Msg: fmt.Sprintf("entity %q differs from %q: Compile takes one entity's features (use CompileAll)", e, entity)})
		}
	}
	if entity == "" {
		entity = DefaultEntity
	}
	s, cerrs := compile(entity, defs, opts, nil)
	errs = append(errs, cerrs...)
	if len(errs) > 0 {
		sortErrors(errs, defs)
		return nil, errs
	}
	return s, nil
}

// CompileAll compiles a whole config's features into one Set per entity,
// keyed by entity name. A derived feature may only use features of its own
// entity.
func CompileAll(defs []config.Feature, opts Options) (map[string]*Set, error) {
	byEntity := map[string][]config.Feature{}
	var order []string
	owner := map[string]string{}
	for _, d := range defs {
		e := entityOf(d)
		if _, ok := byEntity[e]; !ok {
			order = append(order, e)
		}
		byEntity[e] = append(byEntity[e], d)
		if _, ok := owner[d.Name]; !ok {
			owner[d.Name] = e
		}
	}
	sets := map[string]*Set{}
	var errs Errors
	for _, e := range order {
		s, cerrs := compile(e, byEntity[e], opts, owner)
		errs = append(errs, cerrs...)
		sets[e] = s
	}
	if len(errs) > 0 {
		sortErrors(errs, defs)
		return nil, errs
	}
	return sets, nil
}

func entityOf(d config.Feature) string {
	if d.Entity == "" {
		return DefaultEntity
	}
	return d.Entity
}

// sortErrors puts errors in config order (by line when known, else by
// the feature's position), keeping each feature's own order.
func sortErrors(errs Errors, defs []config.Feature) {
	pos := map[string]int{}
	for i, d := range defs {
		if _, ok := pos[d.Name]; !ok {
			pos[d.Name] = i
		}
	}
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i], errs[j]
		if a.Line > 0 && b.Line > 0 {
			return a.Line < b.Line
		}
		return pos[a.Name] < pos[b.Name]
	})
}

func compile(entity string, defs []config.Feature, opts Options, owner map[string]string) (*Set, Errors) {
	var errs Errors
	fail := func(d config.Feature, key, format string, args ...any) {
		errs = append(errs, FeatureError{Name: d.Name, Line: d.Line, Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if opts.AllowedLateness < 0 {
		errs = append(errs, FeatureError{Msg: "allowed lateness must not be negative"})
	}
	s := &Set{
		entity: entity,
		opts:   opts,
		index:  make(map[string]int, len(defs)),
	}
	fieldIDs := map[string]int{}
	groupIDs := map[string]int{}
	for i, d := range defs {
		switch {
		case d.Name == "":
			fail(d, "name", "required")
		case !isIdent(d.Name):
			fail(d, "name", "must be an identifier (letters, digits, _)")
		case d.Name == "now":
			fail(d, "name", `"now" is reserved for the query time in expressions`)
		default:
			if _, dup := s.index[d.Name]; dup {
				fail(d, "name", "duplicate feature name")
			}
		}
		if _, dup := s.index[d.Name]; !dup {
			s.index[d.Name] = i
		}
		s.names = append(s.names, d.Name)
		f := feature{def: d, fieldN: -1, slot: -1}
		if d.Expr != "" {
			f.agg = aggDerived
			if d.Agg != "" || d.Field != "" || d.Event != "" || d.Type != "" || d.Where != "" || d.Window != 0 {
				fail(d, "expr", "a derived feature takes no agg, field, event, type, where or window")
			}
			s.feats = append(s.feats, f)
			s.kinds = append(s.kinds, Any) // set once the expr is type-checked
			continue
		}
		a, ok := aggNames[d.Agg]
		if !ok {
			if d.Agg == "" {
				fail(d, "agg", "required (one of %s), or set expr", strings.Join(config.Aggregations, ", "))
			} else {
				fail(d, "agg", "unknown aggregation %q (want one of %s)", d.Agg, strings.Join(config.Aggregations, ", "))
			}
		}
		f.agg = a
		if !ok {
			f.agg = aggInvalid
		}
		w := d.Window.D()
		switch {
		case w < 0:
			fail(d, "window", "must not be negative")
		case w != 0 && w < time.Second:
			fail(d, "window", "must be at least 1s")
		case w%time.Millisecond != 0:
			fail(d, "window", "must be a whole number of milliseconds")
		case w > 5*365*24*time.Hour:
			fail(d, "window", "must be at most 5 years; omit it for lifetime")
		default:
			f.window = w.Milliseconds()
			f.tile = f.window / tilesPerWindow
		}
		switch {
		case a == aggLastN || a == aggLastByKey:
			f.n = d.N
			if f.n == 0 {
				f.n = 10
				if a == aggLastByKey {
					f.n = 100
				}
			}
			if f.n < 1 || f.n > maxLastN {
				fail(d, "n", "must be between 1 and %d", maxLastN)
			}
		case d.N != 0:
			fail(d, "n", "only last_n and last_by_key take n")
		}
		if a == aggLastByKey && w != 0 {
			fail(d, "window", "last_by_key keeps each key's latest value for the entity's lifetime: omit the window")
		}
		if d.Type != "" && !contains(config.EventTypes, d.Type) {
			fail(d, "type", "unknown event type %q (want one of %s)", d.Type, strings.Join(config.EventTypes, ", "))
		}
		if d.Field == "" {
			if ok && a != aggCount {
				fail(d, "field", "required for agg %s", d.Agg)
			}
		} else {
			fp, err := parseField(d.Field, a == aggLastByKey)
			if err != nil {
				fail(d, "field", "%v", err)
			}
			f.field = fp
			f.tsVal = fp.top == "timestamp"
			id, seen := fieldIDs[d.Field]
			if !seen {
				id = len(fieldIDs)
				fieldIDs[d.Field] = id
			}
			f.fieldN = id
		}
		ev := d.Event
		if ev == "*" {
			ev = ""
		}
		key := ev + "\x00" + d.Type + "\x00" + d.Where
		gi, seen := groupIDs[key]
		if !seen {
			g := group{event: ev, typ: d.Type}
			if d.Where != "" {
				prog, err := expr.Compile(d.Where, expr.Env(whereEnv{}), expr.AsBool())
				if err != nil {
					fail(d, "where", "%s", exprError(err))
				}
				g.where = prog
			}
			gi = len(s.groups)
			groupIDs[key] = gi
			s.groups = append(s.groups, g)
		}
		f.slot = len(s.aggs)
		f.fp = fingerprint(d, ev, f.n)
		s.aggs = append(s.aggs, i)
		s.groups[gi].feats = append(s.groups[gi].feats, i)
		s.feats = append(s.feats, f)
		s.kinds = append(s.kinds, aggKind(f))
	}
	s.fields = len(fieldIDs)
	errs = append(errs, s.compileDerived(owner)...)
	s.wherePool.New = func() any { return new(whereScratch) }
	s.valuesPool.New = func() any {
		return &valuesScratch{env: make(map[string]any, len(s.names)+1)}
	}
	return s, errs
}

func aggKind(f feature) Kind {
	switch f.agg {
	case aggFirst, aggLast:
		if f.tsVal {
			return Number
		}
		return Any
	case aggLastN:
		return List
	case aggLastByKey:
		return Any
	}
	return Number
}

// compileDerived orders the derived features by dependency, reports cycles
// and unknown names, and type-checks each expr against the kinds of the
// features it reads.
func (s *Set) compileDerived(owner map[string]string) Errors {
	var errs Errors
	deps := map[int][]int{}
	unparsed := map[int]bool{}
	var derived []int
	for i, f := range s.feats {
		if f.agg != aggDerived {
			continue
		}
		derived = append(derived, i)
		tree, err := parser.Parse(f.def.Expr)
		if err != nil {
			errs = append(errs, FeatureError{Name: f.def.Name, Line: f.def.Line, Key: "expr", Msg: exprError(err)})
			unparsed[i] = true
			continue
		}
		seen := map[int]bool{}
		ast.Walk(&tree.Node, visitIdents(func(name string) {
			if name == "now" {
				s.usesNow = true
				s.feats[i].readsNow = true
				return
			}
			j, ok := s.index[name]
			if ok && !seen[j] {
				seen[j] = true
				s.feats[i].reads = append(s.feats[i].reads, j)
				if s.feats[j].agg == aggDerived {
					deps[i] = append(deps[i], j)
				}
			}
		}))
	}
	// Depth-first topological sort; a grey node reached again is a cycle.
	const (
		white = iota
		grey
		black
	)
	color := map[int]int{}
	bad := map[int]bool{}
	var stack []int
	var visit func(i int)
	visit = func(i int) {
		color[i] = grey
		stack = append(stack, i)
		for _, j := range deps[i] {
			switch color[j] {
			case white:
				visit(j)
			case grey:
				k := len(stack) - 1
				for stack[k] != j {
					k--
				}
				// Report the cycle once, on its first feature in config
				// order, starting from it.
				members := stack[k:]
				first := 0
				for m := range members {
					bad[members[m]] = true
					if members[m] < members[first] {
						first = m
					}
				}
				cycle := make([]string, 0, len(members)+1)
				for m := range members {
					cycle = append(cycle, s.names[members[(first+m)%len(members)]])
				}
				cycle = append(cycle, cycle[0])
				f := s.feats[members[first]].def
				errs = append(errs, FeatureError{Name: f.Name, Line: f.Line, Key: "expr",
					Msg: "dependency cycle: " + strings.Join(cycle, " -> ")})
			}
			if bad[j] {
				bad[i] = true
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
		s.derived = append(s.derived, i)
	}
	for _, i := range derived {
		if color[i] == white {
			visit(i)
		}
	}
	// Compile in dependency order so each expr sees its inputs' kinds.
	for _, i := range s.derived {
		f := &s.feats[i]
		if bad[i] || unparsed[i] {
			continue
		}
		env := types.Map{"now": types.Float64}
		for j, name := range s.names {
			if j == i {
				continue
			}
			env[name] = kindType(s.kinds[j])
		}
		prog, err := expr.Compile(f.def.Expr, expr.Env(env))
		if err != nil {
			msg := exprError(err)
			var fe *file.Error
			if errors.As(err, &fe) && owner != nil {
				if name, ok := strings.CutPrefix(fe.Message, "unknown name "); ok {
					if e, ok := owner[name]; ok && e != s.entity {
						msg += fmt.Sprintf(" (feature %s belongs to entity %s)", name, e)
					}
				}
			}
			errs = append(errs, FeatureError{Name: f.def.Name, Line: f.def.Line, Key: "expr", Msg: msg})
			continue
		}
		f.prog = prog
		s.kinds[i] = nodeKind(prog.Node())
	}
	for _, i := range s.derived {
		s.steps = append(s.steps, derivedStep{name: s.feats[i].def.Name, prog: s.feats[i].prog, out: i})
	}
	s.compileClosures()
	return errs
}

type visitIdents func(name string)

func (v visitIdents) Visit(node *ast.Node) {
	if id, ok := (*node).(*ast.IdentifierNode); ok {
		v(id.Value)
	}
}

func kindType(k Kind) types.Type {
	switch k {
	case Number:
		return types.Float64
	case String:
		return types.String
	case List:
		return types.Array(types.Any)
	}
	return types.Any
}

// nodeKind is the kind of an expr's result. A conditional whose branches
// have one kind has that kind (cond ? sum / n : 0 is a Number, though
// float64 and int make its Go type interface{}).
func nodeKind(n ast.Node) Kind {
	if c, ok := n.(*ast.ConditionalNode); ok {
		if k := nodeKind(c.Exp1); k == nodeKind(c.Exp2) {
			return k
		}
		return Any
	}
	return typeKind(n.Type())
}

func typeKind(t reflect.Type) Kind {
	if t == nil {
		return Any
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return Number
	case reflect.String:
		return String
	case reflect.Slice, reflect.Array:
		return List
	}
	return Any
}

// exprError formats an expr-lang error on one line with its position.
func exprError(err error) string {
	var fe *file.Error
	if errors.As(err, &fe) {
		if fe.Line > 0 {
			return fmt.Sprintf("%s (line %d, column %d)", fe.Message, fe.Line, fe.Column+1)
		}
		return fe.Message
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

func isIdent(s string) bool {
	for i, c := range s {
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return s != ""
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Entity is the entity all of the Set's features belong to.
func (s *Set) Entity() string { return s.entity }

// Options returns the options the Set was compiled with.
func (s *Set) Options() Options { return s.opts }

// Names lists every feature, aggregated and derived, in config order.
// Values fills a slice in the same order. Do not modify it.
func (s *Set) Names() []string { return s.names }

// Kinds gives the value kind of each feature, parallel to Names. Do not modify it.
func (s *Set) Kinds() []Kind { return s.kinds }

// Index returns the position of the named feature in Names, or -1.
func (s *Set) Index(name string) int {
	if i, ok := s.index[name]; ok {
		return i
	}
	return -1
}

// Feature returns the definition of the i-th feature.
func (s *Set) Feature(i int) config.Feature { return s.feats[i].def }

// UsesNow reports whether a derived feature reads `now`: its value then
// changes with time in a way NextChange does not predict, so callers should
// recompute such entities periodically.
func (s *Set) UsesNow() bool { return s.usesNow }

// finite maps NaN and ±Inf (which JSON cannot carry) to false.
func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
