package history

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/event"
)

// Reader reads the history back: events per entity in time order for
// backfills and training sets. It is safe for concurrent use.
type Reader struct {
	conn driver.Conn
	db   string
}

// NewReader reads from database db through conn.
func NewReader(conn driver.Conn, db string) *Reader { return &Reader{conn: conn, db: db} }

// Conn is the connection the Reader reads through.
func (r *Reader) Conn() driver.Conn { return r.conn }

// Database is the history database's name.
func (r *Reader) Database() string { return r.db }

// Table is a table of the history database, quoted for SQL.
func (r *Reader) Table(name string) string { return quoteIdent(r.db) + "." + quoteIdent(name) }

// Maps says which of an event's JSON maps to decode; the others stay nil.
// Decoding is most of a replay's cost, so a backfill asks only for the maps
// its features read.
type Maps struct {
	Properties, Traits, Context, Integrations bool
}

// AllMaps decodes every map.
var AllMaps = Maps{true, true, true, true}

// EventFilter selects the events to replay.
type EventFilter struct {
	// Since and Until bound the event time: Since <= timestamp < Until.
	// Zero values leave that side open.
	Since, Until time.Time
	// Entities, when set, restricts the read to these entity ids.
	Entities []string
	// Shards splits the read into this many queries, each over a range of
	// entity ids, so that one range's events are in memory at a time. 0
	// picks one shard per shardEvents events.
	Shards int
	Maps   Maps
	// Fields, when not nil, are the event paths the replay reads, as a
	// feature's field names them ("event", "type", "properties.revenue",
	// "traits.address.country", a whole map as "properties"). Only their
	// columns are read, and of a map only the top-level keys named: the
	// events hold those, the message id, timestamp and receive time, and
	// nothing else. Nil reads every top-level field and the maps in Maps.
	Fields []string
	// MapEvents, with Fields, narrows the map keys of Fields to the events
	// of these names (track events' event column): the maps of the others
	// stay nil and are not even sent. Nil: every event's.
	MapEvents []string
	// Workers is how many goroutines call fn at once, each with its own
	// entities (default 1: one at a time). fn must then be safe for
	// concurrent use.
	Workers int
	// Cut, when set, keeps only the events read from one partition of the
	// events topic before an offset (the kafka_partition and kafka_offset
	// columns): what a stream task had processed before it.
	Cut *Cut
}

// Cut is a position in the events topic: events of Partition with an
// offset below Before, except those of which a copy (same message_id) is
// at an offset in [Before, Seen) (Seen 0: any offset from Before on). A
// duplicate straddling the cut is the stream's to count, which sees both
// copies; history may hold only the later one once ClickHouse has merged
// them, so leaving them out is the answer that does not depend on when
// merges ran.
type Cut struct {
	Partition int32
	Before    int64
	Seen      int64
}

// shardEvents is the default number of events a shard holds: about 100 MB
// of rows in memory, two shards at a time.
const shardEvents = 250_000

// EachEntity calls fn once per entity with the entity's events in time
// order (ties by receive time, then message id), each message_id once, as
// FINAL would show them. Entities come in no particular order. fn must not
// keep events after it returns; its error stops the read and is returned.
//
// ClickHouse only filters: sorting wide rows costs it ten times a plain
// scan (18.16 and later alike), so each shard, a range of entity ids that
// the table's primary key finds, is read unsorted and grouped and sorted
// here, while fn works through the previous shard. With f.Fields, only
// the columns and map keys the caller reads are read and decoded. Each
// row comes packed in one string (unpacker), the one value clickhouse-go
// scans per row; the rest of a replay's cost is clickhouse-go's block
// decoding, the map keys' decoding and the caller's own work
// (docs/BENCHMARKS.md, "History and backfill").
func (r *Reader) EachEntity(ctx context.Context, f EventFilter, fn func(id string, events []*event.Event) error) error {
	where := []string{"1"}
	var args []any
	if !f.Since.IsZero() {
		where = append(where, "timestamp_ms >= ?")
		args = append(args, f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		where = append(where, "timestamp_ms < ?")
		args = append(args, f.Until.UnixMilli())
	}
	if f.Cut != nil {
		seen := f.Cut.Seen
		if seen == 0 {
			seen = math.MaxInt64
		}
		where = append(where, fmt.Sprintf("kafka_partition = ? AND kafka_offset < ? AND message_id NOT IN "+
			"(SELECT message_id FROM %s WHERE kafka_partition = ? AND kafka_offset >= ? AND kafka_offset < ?)", r.Table("events")))
		args = append(args, f.Cut.Partition, f.Cut.Before, f.Cut.Partition, f.Cut.Before, seen)
	}
	if f.Entities != nil {
		if len(f.Entities) == 0 {
			return nil
		}
		where = append(where, "entity_id IN ("+stringList(f.Entities)+")")
	}
	bounds, count, err := r.shardBounds(ctx, f.Shards, where, args)
	if err != nil {
		return err
	}
	proj := project(f)
	cols := proj.selectList()
	queries := make([]string, len(bounds)+1)
	for k := range queries {
		w := where[:len(where):len(where)]
		if k > 0 {
			w = append(w, "entity_id >= "+stringList(bounds[k-1:k]))
		}
		if k < len(bounds) {
			w = append(w, "entity_id < "+stringList(bounds[k:k+1]))
		}
		queries[k] = fmt.Sprintf("SELECT %s FROM %s WHERE %s", cols, r.Table("events"), strings.Join(w, " AND "))
	}

	// One goroutine reads and groups shard k+1 while this one (and
	// f.Workers-1 more) replays shard k.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	shards := make(chan *shard, 1)
	free := make(chan *shard, 3) // shards' buffers, reused: allocation is most of a read's cost
	readErr := make(chan error, 1)
	go func() {
		defer close(shards)
		for _, q := range queries {
			var s *shard
			select {
			case s = <-free:
			default:
				s = &shard{}
			}
			// Room for a shard a quarter above the mean at once: growing
			// the rows copies them.
			n := int(count/uint64(len(queries))) * 5 / 4
			s.rows, s.read = slices.Grow(s.rows[:0], n), slices.Grow(s.read[:0], n)
			err := r.readShard(ctx, q, args, &proj, s)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case shards <- s:
			case <-ctx.Done():
				readErr <- ctx.Err()
				return
			}
		}
		readErr <- nil
	}()
	workers := max(f.Workers, 1)
	reps := make([]replayer, workers)
	for k := range reps {
		reps[k].u, reps[k].keys = proj.unpacker(), newKeyDecoder()
	}
	errs := make([]error, workers)
	var (
		wg     sync.WaitGroup
		failed atomic.Bool // a worker's fn failed: the others stop too
	)
	for s := range shards {
		// Each worker replays a run of the shard's entities, about as
		// many events each.
		from := 0
		for k := range workers {
			to := len(s.groups)
			if k < workers-1 {
				half := s.groups[from:]
				if len(half) > 0 {
					goal := half[0].start + (int32(len(s.keys))-half[0].start)/int32(workers-k)
					to = from + sort.Search(len(half), func(j int) bool { return half[j].start >= goal })
				} else {
					to = from
				}
			}
			groups := s.groups[from:to]
			from = to
			if workers == 1 {
				errs[0] = reps[0].replay(s, groups, &proj, &failed, fn)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[k] = reps[k].replay(s, groups, &proj, &failed, fn)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				cancel()
				for range shards { // let the reader finish
				}
				<-readErr
				return err
			}
		}
		select {
		case free <- s:
		default:
		}
	}
	return <-readErr
}

// replayer turns a shard's rows into events and hands them to fn, entity
// by entity, with buffers it reuses (fn keeps no event).
type replayer struct {
	u    unpacker
	keys *keyDecoder
	pool []event.Event
	evs  []*event.Event
	seen idSet
	maps [][4]map[string]any // each pool slot's maps
}

func (rp *replayer) replay(s *shard, groups []group, proj *projection, failed *atomic.Bool, fn func(id string, events []*event.Event) error) error {
	for _, g := range groups {
		if failed.Load() {
			return nil
		}
		keys := s.keys[g.start:g.end]
		if cap(rp.pool) < len(keys) {
			rp.pool = make([]event.Event, len(keys))
		}
		for len(rp.maps) < len(keys) {
			rp.maps = append(rp.maps, [4]map[string]any{})
		}
		pool, evs := rp.pool[:0], rp.evs[:0]
		rp.seen.reset(len(keys))
		for _, k := range keys {
			if !rp.seen.add(&rp.u, s.rows, k.hash, k.row) {
				continue
			}
			pool = pool[:len(pool)+1]
			e := &pool[len(pool)-1]
			var x row
			rp.u.split(s.rows[k.row], &x)
			x.fill(e, proj, rp.keys, &rp.maps[len(pool)-1])
			evs = append(evs, e)
		}
		rp.evs = evs
		if err := fn(g.id, evs); err != nil {
			failed.Store(true)
			return err
		}
	}
	return nil
}

// shardBounds splits the matching events into n ranges of entity ids (n 0:
// one per shardEvents): the n-1 ids between them, from a sample of ids.
//
// count is the number of matching events when n was 0.
func (r *Reader) shardBounds(ctx context.Context, n int, where []string, args []any) (bounds []string, count uint64, err error) {
	cond := strings.Join(where, " AND ")
	if n <= 0 {
		sql := fmt.Sprintf("SELECT count() FROM %s WHERE %s", r.Table("events"), cond)
		if err := r.conn.QueryRow(ctx, sql, args...).Scan(&count); err != nil {
			return nil, 0, fmt.Errorf("cannot count events: %w", err)
		}
		n = int(count / shardEvents)
	}
	if n <= 1 {
		return nil, count, nil
	}
	// About 100 sampled ids per shard; rand() reads no other column.
	sample := "1"
	if count > uint64(100*n) {
		sample = fmt.Sprintf("rand() %% %d = 0", count/uint64(100*n))
	}
	rows, err := r.conn.Query(ctx, fmt.Sprintf("SELECT entity_id FROM %s WHERE %s AND %s", r.Table("events"), cond, sample), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot sample entity ids: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, 0, fmt.Errorf("cannot sample entity ids: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("cannot sample entity ids: %w", err)
	}
	slices.Sort(ids)
	for k := 1; k < n; k++ {
		if b := ids[k*len(ids)/n]; len(bounds) == 0 || b > bounds[len(bounds)-1] {
			bounds = append(bounds, b)
		}
	}
	if len(bounds) > 0 && bounds[0] == ids[0] {
		bounds = bounds[1:] // an empty first range
	}
	return bounds, count, nil
}

// row is one events row unpacked, its maps still JSON: properties,
// traits, context, integrations. Columns not read stay zero.
type row struct {
	entity, messageID, typ, evt string
	ts, recv                    int64
	maps                        [4]string
	more                        *rowMore // the columns features seldom read, when read
}

type rowMore struct {
	name, userID, anonymousID, previousID, groupID, featureSet string
	sent, orig                                                 int64
}

// fill makes e the row's event, decoding the maps the projection reads;
// reuse holds maps it may fill (when it reads only some keys), with d.
func (r *row) fill(e *event.Event, p *projection, d *keyDecoder, reuse *[4]map[string]any) {
	var m [4]map[string]any
	for i, s := range r.maps {
		switch {
		case s == "":
		case p.keys[i] == nil:
			m[i] = decodeMap(s)
		default:
			if reuse[i] == nil {
				reuse[i] = make(map[string]any, len(p.keys[i]))
			}
			m[i] = d.decode(s, p.keys[i], reuse[i])
		}
	}
	*e = event.Event{Type: event.Type(r.typ), MessageID: r.messageID, Event: r.evt,
		Timestamp: time.UnixMilli(r.ts).UTC(), ReceivedAt: time.UnixMilli(r.recv).UTC(),
		Properties: m[0], Traits: m[1], Context: m[2], Integrations: m[3]}
	if x := r.more; x != nil {
		e.Name, e.UserID, e.AnonymousID, e.PreviousID, e.GroupID, e.FeatureSet = x.name, x.userID, x.anonymousID, x.previousID, x.groupID, x.featureSet
		if x.sent != 0 {
			e.SentAt = time.UnixMilli(x.sent).UTC()
		}
		if x.orig != 0 {
			e.OriginalTimestamp = time.UnixMilli(x.orig).UTC()
		}
	}
}

// idSet is the set of message ids an entity's replay has seen, reused
// from entity to entity: an open-addressing table of the ids' hashes and
// rows (a Go map of strings cost a tenth of the replay).
type idSet struct {
	hashes []uint64
	rows   []int32 // row index + 1; 0 is an empty slot
}

// reset empties the set for up to n ids.
func (s *idSet) reset(n int) {
	size := 16
	for size < 2*n {
		size *= 2
	}
	if len(s.rows) < size {
		s.hashes, s.rows = make([]uint64, size), make([]int32, size)
		return
	}
	s.hashes, s.rows = s.hashes[:size], s.rows[:size]
	clear(s.rows)
}

// add adds the message id of packed row i of rows, its hash h, false
// when it was there. Only equal hashes read the rows.
func (s *idSet) add(u *unpacker, rows []string, h uint64, i int32) bool {
	mask := len(s.rows) - 1
	for k := int(h) & mask; ; k = (k + 1) & mask {
		switch j := s.rows[k]; {
		case j == 0:
			s.hashes[k], s.rows[k] = h, i+1
			return true
		case s.hashes[k] == h && u.messageID(rows[j-1]) == u.messageID(rows[i]):
			return false
		}
	}
}

// shard is one range's rows, grouped by entity: keys[g.start:g.end] are
// one entity's events in replay order.
//
// A row stays as clickhouse-go scanned it, packed (unpacker), until the
// replay unpacks it: the sort and the dedupe read the keys, in one array,
// and the replay each row's one string once. (Rows unpacked at once into
// 160-byte structs were read back long after, in the replay's order, and
// more than once: the dedupe alone spent 6% of the replay waiting for
// them. The wait for each row's string remains: unpacking is 4%.)
type shard struct {
	rows   []string // packed rows, in read order
	read   []sortKey
	keys   []sortKey // read, grouped by entity and sorted
	groups []group
	ofRow  []int32   // scratch: each row's entity
	counts []int32   // scratch: each entity's row count
	byTime []uint64  // scratch of sort
	sorted []sortKey // scratch of sort
}

type group struct {
	id         string
	start, end int32
}

// sortKey is what ordering and the dedupe read of a row.
type sortKey struct {
	ts, recv int64
	hash     uint64 // of the message id
	row      int32
}

// readShard reads one query's rows and groups them by entity, each
// entity's in time order (ties by receive time, then message id).
func (r *Reader) readShard(ctx context.Context, sql string, args []any, p *projection, s *shard) error {
	rs, err := r.conn.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("cannot read events: %w", err)
	}
	defer rs.Close()
	// Rows come in runs of one entity (each part is sorted by entity), so
	// the map is consulted once per run.
	s.rows, s.read, s.ofRow, s.counts, s.groups = s.rows[:0], s.read[:0], s.ofRow[:0], s.counts[:0], s.groups[:0]
	var (
		ids    = map[string]int32{}
		last   = int32(-1)
		prev   string
		u      = p.unpacker()
		packed string
		dest   = []any{&packed}
	)
	for rs.Next() {
		if err := rs.Scan(dest...); err != nil {
			return fmt.Errorf("cannot read event row: %w", err)
		}
		if !u.valid(packed) {
			return fmt.Errorf("cannot read event row: the lengths of its strings do not add up")
		}
		if entity := u.entity(packed); last < 0 || entity != prev {
			id, ok := ids[entity]
			if !ok {
				id = int32(len(s.groups))
				ids[entity] = id
				s.groups = append(s.groups, group{id: entity})
				s.counts = append(s.counts, 0)
			}
			last, prev = id, entity
		}
		s.read = append(s.read, u.key(packed, int32(len(s.rows))))
		s.rows = append(s.rows, packed)
		s.ofRow = append(s.ofRow, last)
		s.counts[last]++
	}
	if err := rs.Err(); err != nil {
		return fmt.Errorf("cannot read events: %w", err)
	}
	// Counting sort by entity, then each entity's events by time.
	var at int32
	for id, c := range s.counts {
		s.groups[id].start, s.groups[id].end = at, at
		at += c
	}
	s.keys = slices.Grow(s.keys[:0], len(s.rows))[:len(s.rows)]
	for i, id := range s.ofRow {
		g := &s.groups[id]
		s.keys[g.end] = s.read[i]
		g.end++
	}
	rows := s.rows
	order := func(a, b sortKey) int {
		if c := cmp.Compare(a.ts, b.ts); c != 0 {
			return c
		}
		if c := cmp.Compare(a.recv, b.recv); c != 0 {
			return c
		}
		return strings.Compare(u.messageID(rows[a.row]), u.messageID(rows[b.row]))
	}
	for _, g := range s.groups {
		s.sort(s.keys[g.start:g.end], order)
	}
	return nil
}

// sort puts one entity's keys in order. When their times span less than
// 2^(64-b) ms, b the bits of an index into keys (any entity's but one of
// millions of events over centuries), it sorts integers instead, each a
// time and an index: several times faster than calling order, which then
// orders only runs of equal times.
func (s *shard) sort(keys []sortKey, order func(a, b sortKey) int) {
	if len(keys) < 2 {
		return
	}
	b := bits.Len(uint(len(keys) - 1))
	lo, hi := keys[0].ts, keys[0].ts
	for _, k := range keys[1:] {
		lo, hi = min(lo, k.ts), max(hi, k.ts)
	}
	if (uint64(hi)-uint64(lo))>>(64-b) != 0 {
		slices.SortFunc(keys, order)
		return
	}
	byTime := s.byTime[:0]
	for i, k := range keys {
		byTime = append(byTime, (uint64(k.ts)-uint64(lo))<<b|uint64(i))
	}
	slices.Sort(byTime)
	sorted := s.sorted[:0]
	for _, x := range byTime {
		sorted = append(sorted, keys[x&(1<<b-1)])
	}
	copy(keys, sorted)
	s.byTime, s.sorted = byTime, sorted
	for i := 0; i < len(keys); {
		j := i + 1
		for j < len(keys) && keys[j].ts == keys[i].ts {
			j++
		}
		if j-i > 1 {
			slices.SortFunc(keys[i:j], order)
		}
		i = j
	}
}

// decodeMap reads a stored JSON object; "" (not selected) and "{}" are nil,
// as in an event that had no such map.
func decodeMap(s string) map[string]any {
	if len(s) <= 2 {
		return nil
	}
	if m, ok := decodeFlat(s); ok {
		return m
	}
	var m map[string]any
	if json.Unmarshal([]byte(s), &m) != nil {
		return nil
	}
	return m
}

// decodeFlat decodes the common case of a stored map quickly: one object
// of string, number, boolean and null values, no escapes, as the JSON
// decoder would (numbers as float64; strings share s's bytes). Anything
// else (nesting, escapes, odd syntax) says !ok and takes the full decoder.
func decodeFlat(s string) (map[string]any, bool) {
	i := skipSpace(s, 0)
	if i >= len(s) || s[i] != '{' {
		return nil, false
	}
	m := make(map[string]any, 8)
	i = skipSpace(s, i+1)
	if i < len(s) && s[i] == '}' {
		return m, skipSpace(s, i+1) == len(s)
	}
	for {
		key, j, ok := flatString(s, i)
		if !ok {
			return nil, false
		}
		i = skipSpace(s, j)
		if i >= len(s) || s[i] != ':' {
			return nil, false
		}
		i = skipSpace(s, i+1)
		if i >= len(s) {
			return nil, false
		}
		switch c := s[i]; {
		case c == '"':
			v, j, ok := flatString(s, i)
			if !ok {
				return nil, false
			}
			m[key], i = v, j
		case c == '-' || c >= '0' && c <= '9':
			j := i + 1
			for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.' || s[j] == 'e' || s[j] == 'E' || s[j] == '+' || s[j] == '-') {
				j++
			}
			f, err := strconv.ParseFloat(s[i:j], 64)
			if err != nil || !jsonNumber(s[i:j]) {
				return nil, false
			}
			m[key], i = f, j
		case strings.HasPrefix(s[i:], "true"):
			m[key], i = true, i+4
		case strings.HasPrefix(s[i:], "false"):
			m[key], i = false, i+5
		case strings.HasPrefix(s[i:], "null"):
			m[key], i = nil, i+4
		default:
			return nil, false
		}
		i = skipSpace(s, i)
		if i >= len(s) {
			return nil, false
		}
		switch s[i] {
		case ',':
			i = skipSpace(s, i+1)
		case '}':
			return m, skipSpace(s, i+1) == len(s)
		default:
			return nil, false
		}
	}
}

// flatString reads a JSON string without escapes or control characters at
// s[i]: its text and the index after the closing quote.
func flatString(s string, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", 0, false
	}
	high := false
	for j := i + 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			if high && !utf8.ValidString(s[i+1:j]) {
				return "", 0, false // the decoder replaces bad bytes
			}
			return s[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return "", 0, false
		case c >= 0x80:
			high = true
		}
	}
	return "", 0, false
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// jsonNumber says whether n follows JSON's number grammar, which is
// stricter than strconv's (no leading zeros, no "1.", no ".5").
func jsonNumber(n string) bool {
	i := 0
	if n[i] == '-' {
		i++
	}
	switch {
	case i < len(n) && n[i] == '0':
		i++
	case i < len(n) && n[i] >= '1' && n[i] <= '9':
		for i < len(n) && n[i] >= '0' && n[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(n) && n[i] == '.' {
		i++
		if i == len(n) || n[i] < '0' || n[i] > '9' {
			return false
		}
		for i < len(n) && n[i] >= '0' && n[i] <= '9' {
			i++
		}
	}
	if i < len(n) && (n[i] == 'e' || n[i] == 'E') {
		i++
		if i < len(n) && (n[i] == '+' || n[i] == '-') {
			i++
		}
		if i == len(n) || n[i] < '0' || n[i] > '9' {
			return false
		}
		for i < len(n) && n[i] >= '0' && n[i] <= '9' {
			i++
		}
	}
	return i == len(n)
}

// ParseTime reads a label or flag time: epoch milliseconds, ISO-8601, or
// ClickHouse's "2006-01-02 15:04:05" (UTC when no zone is given).
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms).UTC(), nil
	}
	return event.ParseTime(s)
}

// stringList is a list of SQL string literals. (clickhouse-go binds a slice
// as an array, which 18.16's IN refuses.)
func stringList(ss []string) string {
	var b strings.Builder
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('\'')
		b.WriteString(strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s))
		b.WriteByte('\'')
	}
	return b.String()
}

// EntitiesBetween lists the entities with events read from partition of
// the events topic at offsets in [from, to).
func (r *Reader) EntitiesBetween(ctx context.Context, partition int32, from, to int64, fn func(id string) error) error {
	rows, err := r.conn.Query(ctx, fmt.Sprintf("SELECT DISTINCT entity_id FROM %s WHERE kafka_partition = ? AND kafka_offset >= ? AND kafka_offset < ?",
		r.Table("events")), partition, from, to)
	if err != nil {
		return fmt.Errorf("cannot list entities: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return fmt.Errorf("cannot list entities: %w", err)
		}
		if err := fn(id); err != nil {
			return err
		}
	}
	return rows.Err()
}
