// Package aggregate is Pulse's windowed aggregation: feature definitions
// from pulse.yaml compile into a Set; each entity keeps a State of partial
// aggregates (tiles); the Set folds events into a State and computes the
// feature values as of any time. The stream processor and the backfill run
// this one implementation, which is what keeps training and serving equal.
//
// Pure: no I/O, no goroutines, no clocks — every time is an argument, at
// millisecond resolution.
//
// # API
//
//	func Compile(defs []config.Feature, opts Options) (*Set, error)            // one entity; error is Errors
//	func CompileAll(defs []config.Feature, opts Options) (map[string]*Set, error) // a Set per entity
//	func (s *Set) Entity() string
//	func (s *Set) Names() []string          // config order, aggregated and derived
//	func (s *Set) Kinds() []Kind            // Number, String, List or Any, parallel to Names
//	func (s *Set) Index(name string) int    // -1 when unknown
//	func (s *Set) Feature(i int) config.Feature
//	func (s *Set) UsesNow() bool            // a derived expr reads now: recompute periodically
//	func (s *Set) NewState() *State
//	func (s *Set) Apply(st *State, e *event.Event) (changed bool, err error) // err wraps ErrTooLate
//	func (s *Set) Reads() (paths []string, all bool) // the event fields Apply reads: event.NewProjection(set.Reads())
//	func (s *Set) Prefetch(st *State, e *event.Event) int64 // read ahead what Apply(st, e) will read
//	func (s *Set) Values(st *State, now time.Time, dst []any) []any
//	func (s *Set) Derive(values []any, now time.Time)           // derived features as of now, at read time
//	func (s *Set) DeriveOne(i int, values []any, now time.Time) any // one feature as Derive makes it
//	func (s *Set) Inputs(i int) []int                           // the aggregated features feature i is made of
//	func (s *Set) NextChange(st *State, now time.Time) (t time.Time, ok bool)
//	func (s *Set) Expire(st *State, now time.Time) (noWindows bool)
//	func (s *Set) DecodeState(b []byte) (*State, error)
//	func (s *Set) Fingerprint(i int) (fp uint64, ok bool) // what a feature's state means; ok false when derived
//	func (s *Set) Merge(dst, src *State, fp uint64) bool   // fold src's partial state of one feature into dst
//	func (st *State) AppendBinary(dst []byte) []byte
//	func (st *State) NewestMillis() int64   // math.MinInt64 before any event
//	func (st *State) Empty() bool           // nothing stored: the State may be deleted
//
// A typical life, in the stream:
//
//	st, err := set.DecodeState(stored)   // or set.NewState()
//	changed, err := set.Apply(st, ev)    // errors.Is(err, aggregate.ErrTooLate): dead-letter
//	vals = set.Values(st, now, vals)
//	at, ok := set.NextChange(st, now)    // index the entity's timer
//	if set.Expire(st, now) && st.Empty() { /* delete the state */ }
//	stored = st.AppendBinary(stored[:0])
//
// One Set holds one entity's features: Compile takes features of a single
// entity (Entity "" means "user"), CompileAll a whole config. Compile
// errors are Errors: a FeatureError per problem, naming the feature, its
// config line and the key at fault, in config order.
//
// A Set is immutable and safe for concurrent use by many goroutines, each
// applying to its own States; a State is used by one goroutine at a time,
// and only with the Set that made it (after a config change, move a State
// to the new Set with DecodeState(st.AppendBinary(nil))).
//
// Values are valid for any time T from NewestMillis - AllowedLateness on
// (and from now - AllowedLateness after Expire(now)); earlier tiles may
// have been dropped. The window rule, the tie rule of first/last/last_n,
// lateness, distinct's exact-then-HyperLogLog bound and derived features
// are specified in docs/features.md.
package aggregate
