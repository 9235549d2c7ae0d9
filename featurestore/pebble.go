package featurestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"github.com/cockroachdb/pebble/vfs"
	"github.com/pulse-rt/pulse/internal/diskfault"
)

// PebbleOptions tune OpenPebble. The zero value is ready to use.
type PebbleOptions struct {
	// Sync makes every Write wait until its batch is on disk (fsync).
	// Default false (pebble.NoSync): Write returns once the batch is in the
	// write-ahead log's buffer, which Pebble writes out soon (its flush
	// goroutine) but does not sync, so a process crash can lose the last
	// moments of writes and a machine crash the last 100 ms. Open, the
	// store the stream writes, sets it: the segment member lists and counts
	// follow the changes a Write is told, so a lost write leaves them wrong
	// for good (a vector is rewritten whole at the entity's next change; a
	// member list is not), and the stream after a crash writes again only
	// its last transaction's entities. Syncing costs an fsync per batch,
	// shared by the batches committing together (Pebble's group commit).
	Sync bool
	// CacheSize is the block cache in bytes, overriding the default 64 MiB.
	CacheSize int64
	// RowCacheSize bounds the encoded vectors kept in memory in front of
	// Pebble (the ones last written or read), in bytes: default 64 MiB,
	// about 150k users of 25 features; negative turns it off.
	RowCacheSize int64
	// Logger receives Pebble's messages, overriding the default
	// slog.Default(). Pebble's informational messages are logged at Debug.
	Logger *slog.Logger
}

// Pebble is the embedded online store, for `pulse dev` and single-node
// setups. It is safe for concurrent use: any number of readers never wait;
// writes are serialised, which is what keeps segment counts exact.
//
// Keys:
//
//	v/<entity>/<id>            the encoded Vector
//	m/<entity>/<segment>/<id>  empty: id is a member of segment
//	c/<entity>/<segment>       the member count, 8 bytes little endian
type Pebble struct {
	path string
	opts PebbleOptions
	fs   vfs.FS // nil: the disk; errorfs in tests

	// swap guards db and fault: readers hold it shared, a reopen after a
	// disk fault holds it alone (and mu too).
	swap  sync.RWMutex
	db    *pebble.DB // nil while a reopen failed
	fault *diskfault.Fault

	writeOpts *pebble.WriteOptions
	closed    atomic.Bool

	rows *rowCache // nil: off
	// beforeFill, in tests, runs between a Pebble read and its fill of
	// the row cache.
	beforeFill func()

	mu sync.Mutex // serialises Write: counts read then update
	// unsynced holds, under mu, every key written since the write-ahead
	// log was last synced (nil: deleted), to write again into the
	// reopened database if a disk fault loses the WAL's tail: writes are
	// not synced one by one (PebbleOptions.Sync), the WAL is every
	// syncEvery.
	unsynced map[string][]byte
	synced   time.Time
	tried    time.Time // the last reopen attempt, under mu
	// members caches, under mu, whether member keys are in the committed
	// state, as a Write read or committed them: mu serialises every
	// write of a member key, so the cache is that state for the keys it
	// holds. An entity's exit is mostly of a key a recent Write set, and
	// a Get per enter and exit (under mu) was the most of a Write's time
	// with RFM groups. At most membersMax keys; emptied on reopen.
	members    map[string]bool
	membersMax int
}

// membersMax is the default bound of Pebble.members: about 15 MB.
const membersMax = 1 << 17

// syncEvery is how often Write syncs the WAL when PebbleOptions.Sync is
// off, bounding what a disk fault can make it write again.
const syncEvery = 100 * time.Millisecond

// reopenEvery spaces the reopen attempts while the disk refuses writes.
const reopenEvery = time.Second

var _ Store = (*Pebble)(nil)

// OpenPebble opens (creating if needed) the store in directory path.
//
// A write the disk refuses (full, read-only) fails with an error wrapping
// diskfault.ErrFault, and so does every write after it, until the disk
// takes writes again: then the next Write reopens the database (at most
// once a second), writes again what the failed WAL may have lost, and
// goes on. Reads keep answering meanwhile.
func OpenPebble(path string, opts PebbleOptions) (*Pebble, error) {
	return openPebble(path, opts, nil)
}

func openPebble(path string, opts PebbleOptions, fs vfs.FS) (*Pebble, error) {
	if opts.CacheSize <= 0 {
		opts.CacheSize = 64 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	p := &Pebble{path: path, opts: opts, fs: fs, writeOpts: pebble.NoSync, synced: time.Now(), membersMax: membersMax}
	var err error
	if p.db, p.fault, err = p.open(); err != nil {
		return nil, err
	}
	switch {
	case opts.RowCacheSize == 0:
		p.rows = newRowCache(64 << 20)
	case opts.RowCacheSize > 0:
		p.rows = newRowCache(opts.RowCacheSize)
	}
	if opts.Sync {
		p.writeOpts = pebble.Sync
	}
	return p, nil
}

// open opens the Pebble database at p.path.
func (p *Pebble) open() (*pebble.DB, *diskfault.Fault, error) {
	cache := pebble.NewCache(p.opts.CacheSize)
	defer cache.Unref()
	po := &pebble.Options{
		Cache:  cache,
		Levels: make([]pebble.LevelOptions, 7),
		FS:     p.fs,
	}
	fault := diskfault.Watch(po, p.opts.Logger.With("path", p.path), "featurestore")
	for i := range po.Levels {
		// Bloom filters let a Get of an entity the store has never seen
		// (a new user asking for a prediction) skip reading data blocks.
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		po.Levels[i].EnsureDefaults()
	}
	db, err := pebble.Open(p.path, po)
	if err == nil {
		err = fault.Err()
		if err != nil {
			db.Close()
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cannot open feature store %s: %w", p.path, err)
	}
	return db, fault, nil
}

// reopen, under mu, replaces a database that had a disk fault by a new
// one on the same files, once the disk takes writes again, then writes
// unsynced into it. Until then it returns why not.
func (p *Pebble) reopen() error {
	fault := p.fault.Err()
	if time.Since(p.tried) < reopenEvery {
		return fault
	}
	p.tried = time.Now()
	if p.fault.Wedged() {
		return fmt.Errorf("%w: restart the process to reopen the store", fault)
	}
	if err := diskfault.Probe(p.fs, p.path); err != nil {
		return fmt.Errorf("%w (still: %v)", fault, err)
	}
	p.swap.Lock()
	defer p.swap.Unlock()
	if p.db != nil {
		// Its commits fail from the fault on: close it so that its lock
		// is free. Reads answer an error until the new one is open.
		p.db.Close()
		p.db = nil
	}
	db, f, err := p.open()
	if err != nil {
		return fmt.Errorf("%w (reopening: %v)", fault, err)
	}
	b := db.NewBatch()
	for k, v := range p.unsynced {
		if v == nil {
			err = b.Delete([]byte(k), nil)
		} else {
			err = b.Set([]byte(k), v, nil)
		}
		if err != nil {
			break
		}
	}
	if err == nil {
		err = f.Commit(b, pebble.Sync)
	}
	b.Close()
	if err != nil {
		db.Close()
		return fmt.Errorf("%w (writing again what the fault may have lost: %v)", fault, err)
	}
	p.opts.Logger.Info("feature store reopened after a disk fault", "store", p.path, "rewritten_keys", len(p.unsynced), "fault", fault)
	clear(p.unsynced)
	clear(p.members)
	p.db, p.fault, p.synced = db, f, time.Now()
	return nil
}

// Get returns the entity's vector, or ErrNotFound.
func (p *Pebble) Get(ctx context.Context, entity, id string) (Vector, error) {
	if err := checkName("entity", entity); err != nil {
		return Vector{}, err
	}
	var kb [64]byte
	v, err := p.get(vectorKey(kb[:0], entity, id))
	if err != nil {
		return Vector{}, fmt.Errorf("cannot get %s %q: %w", entity, id, err)
	}
	v.Entity, v.ID = entity, id
	return v, nil
}

func (p *Pebble) get(key []byte) (Vector, error) {
	b, found, err := p.appendRaw(key, nil)
	if err != nil {
		return Vector{}, err
	}
	if !found {
		return Vector{}, ErrNotFound
	}
	return Decode(b)
}

// CacheStats counts what the row cache answered; zero when it is off.
func (p *Pebble) CacheStats() CacheStats {
	if p.rows == nil {
		return CacheStats{}
	}
	hits, misses := p.rows.counts()
	return CacheStats{Hits: hits, Misses: misses}
}

// appendRaw appends the value of key to dst, from the row cache or Pebble.
func (p *Pebble) appendRaw(key, dst []byte) ([]byte, bool, error) {
	if p.closed.Load() {
		return dst, false, ErrClosed
	}
	var gen uint64
	if p.rows != nil {
		out, ok, g := p.rows.get(key, dst, 0)
		if ok {
			return out, true, nil
		}
		gen = g
	}
	p.swap.RLock()
	defer p.swap.RUnlock()
	if p.db == nil {
		return dst, false, p.fault.Err()
	}
	b, closer, err := p.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return dst, false, nil
	}
	if err != nil {
		return dst, false, err
	}
	if p.rows != nil {
		if p.beforeFill != nil {
			p.beforeFill()
		}
		p.rows.fill(key, b, gen)
	}
	dst = append(dst, b...)
	closer.Close()
	return dst, true, nil
}

// GetMany returns vectors in the order of ids; found[i] says whether ids[i]
// exists.
func (p *Pebble) GetMany(ctx context.Context, entity string, ids []string) ([]Vector, []bool, error) {
	if err := checkName("entity", entity); err != nil {
		return nil, nil, err
	}
	vecs := make([]Vector, len(ids))
	found := make([]bool, len(ids))
	var key []byte
	for i, id := range ids {
		key = vectorKey(key[:0], entity, id)
		v, err := p.get(key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("cannot get %s %q: %w", entity, id, err)
		}
		v.Entity, v.ID = entity, id
		vecs[i], found[i] = v, true
	}
	return vecs, found, nil
}

// Write applies a batch of updates in one Pebble batch: all or nothing.
func (p *Pebble) Write(ctx context.Context, batch []Update) error {
	if err := checkBatch(batch); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// The vectors are encoded before the lock, so writers (a stream
	// task each) encode in parallel and hold it only to write.
	enc := encodings.Get().(*encoded)
	defer encodings.Put(enc)
	enc.buf, enc.ends = enc.buf[:0], enc.ends[:0]
	for i := range batch {
		enc.buf = Encode(batch[i].Vector, enc.buf)
		enc.ends = append(enc.ends, len(enc.buf))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return ErrClosed
	}
	if p.db == nil || p.fault.Err() != nil {
		if err := p.reopen(); err != nil || p.db == nil {
			return fmt.Errorf("cannot write feature store: %w", errors.Join(err, p.fault.Err()))
		}
	}
	// Membership is read from the committed state (writes are serialised
	// by mu) with this batch's own changes in member, so an entity entering
	// a segment twice in one batch counts once. A plain batch: an indexed
	// one costs a skiplist insert per key, and most updates change no
	// membership.
	b := p.db.NewBatch()
	defer b.Close()
	var (
		deltas map[string]int64 // count key -> change
		member map[string]bool  // member key -> in, as this batch leaves it
		key    []byte
	)
	in := func(key []byte) (bool, error) {
		if v, ok := member[string(key)]; ok {
			return v, nil
		}
		if v, ok := p.members[string(key)]; ok {
			return v, nil
		}
		v, err := has(p.db, key)
		if err == nil {
			p.cacheMember(string(key), v)
		}
		return v, err
	}
	change := func(key []byte, e, seg string, enter bool) error {
		if member == nil {
			member, deltas = map[string]bool{}, map[string]int64{}
		}
		member[string(key)] = enter
		d := int64(1)
		if enter {
			if err := b.Set(key, nil, nil); err != nil {
				return err
			}
		} else {
			if err := b.Delete(key, nil); err != nil {
				return err
			}
			d = -1
		}
		deltas[string(countKey(nil, e, seg))] += d
		return nil
	}
	for i := range batch {
		u := &batch[i]
		e, id := u.Vector.Entity, u.Vector.ID
		key = vectorKey(key[:0], e, id)
		var err error
		if u.Delete {
			err = b.Delete(key, nil)
		} else {
			err = b.Set(key, enc.value(i), nil)
		}
		if err != nil {
			return fmt.Errorf("cannot write %s %q: %w", e, id, err)
		}
		for _, seg := range u.Enter {
			key = memberKey(key[:0], e, seg, id)
			ok, err := in(key)
			if err == nil && !ok {
				err = change(key, e, seg, true)
			}
			if err != nil {
				return fmt.Errorf("cannot write %s %q: %w", e, id, err)
			}
		}
		for _, seg := range u.Exit {
			key = memberKey(key[:0], e, seg, id)
			ok, err := in(key)
			if err == nil && ok {
				err = change(key, e, seg, false)
			}
			if err != nil {
				return fmt.Errorf("cannot write %s %q: %w", e, id, err)
			}
		}
	}
	for ck, d := range deltas {
		if d == 0 {
			continue
		}
		n, err := readCount(p.db, []byte(ck))
		if err != nil {
			return err
		}
		if err := b.Set([]byte(ck), binary.LittleEndian.AppendUint64(nil, uint64(n+d)), nil); err != nil {
			return fmt.Errorf("cannot write segment count: %w", err)
		}
	}
	if err := p.fault.Commit(b, p.writeOpts); err != nil {
		return fmt.Errorf("cannot commit feature store batch: %w", err)
	}
	p.keepUnsynced(b)
	for k, v := range member {
		p.cacheMember(k, v)
	}
	if p.rows != nil {
		for i := range batch {
			key = vectorKey(key[:0], batch[i].Vector.Entity, batch[i].Vector.ID)
			if batch[i].Delete {
				p.rows.drop(key)
			} else {
				p.rows.set(key, enc.value(i))
			}
		}
	}
	return nil
}

// cacheMember records, under mu, that member key k is (or is not) in the
// committed state; at the bound it first drops about half the keys.
func (p *Pebble) cacheMember(k string, in bool) {
	if p.members == nil {
		p.members = map[string]bool{}
	}
	if len(p.members) >= p.membersMax {
		n := 0
		for k := range p.members {
			if n++; n%2 == 1 {
				delete(p.members, k)
			}
		}
	}
	p.members[k] = in
}

// encoded is a Write's vectors, encoded one after the other in buf, each
// ending where ends says. Pebble's batch and the row cache copy them.
type encoded struct {
	buf  []byte
	ends []int
}

func (e *encoded) value(i int) []byte {
	at := 0
	if i > 0 {
		at = e.ends[i-1]
	}
	return e.buf[at:e.ends[i]]
}

// encodings are the buffers of Writes in progress, reused.
var encodings = sync.Pool{New: func() any { return new(encoded) }}

// keepUnsynced, under mu, adds the committed b to unsynced, and syncs the
// WAL (emptying unsynced) when the last sync is syncEvery old. A sync
// that fails is a fault: the next Write reopens the database.
func (p *Pebble) keepUnsynced(b *pebble.Batch) {
	if p.opts.Sync {
		return
	}
	if p.unsynced == nil {
		p.unsynced = map[string][]byte{}
	}
	r := b.Reader()
	for {
		kind, k, v, ok, err := r.Next()
		if !ok || err != nil {
			break
		}
		switch kind {
		case pebble.InternalKeyKindSet:
			p.unsynced[string(k)] = append(make([]byte, 0, len(v)), v...)
		case pebble.InternalKeyKindDelete:
			p.unsynced[string(k)] = nil
		}
	}
	if time.Since(p.synced) < syncEvery {
		return
	}
	if err := p.db.LogData(nil, pebble.Sync); err == nil && p.fault.Err() == nil {
		clear(p.unsynced)
		p.synced = time.Now()
	}
}

func has(r pebble.Reader, key []byte) (bool, error) {
	_, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

func readCount(r pebble.Reader, key []byte) (int64, error) {
	b, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cannot read segment count: %w", err)
	}
	defer closer.Close()
	if len(b) != 8 {
		return 0, fmt.Errorf("cannot read segment count: %d bytes, want 8", len(b))
	}
	return int64(binary.LittleEndian.Uint64(b)), nil
}

// SegmentCount is the number of members of a segment.
func (p *Pebble) SegmentCount(ctx context.Context, entity, segment string) (int64, error) {
	if err := checkNames(entity, segment); err != nil {
		return 0, err
	}
	if p.closed.Load() {
		return 0, ErrClosed
	}
	p.swap.RLock()
	defer p.swap.RUnlock()
	if p.db == nil {
		return 0, p.fault.Err()
	}
	return readCount(p.db, countKey(nil, entity, segment))
}

// SegmentMembers lists member ids in byte order after cursor ("" = from the
// start), at most limit; next is "" at the end. The cursor is the last id
// of the previous page, so members added or removed meanwhile never make a
// page repeat or skip an id that stayed a member.
func (p *Pebble) SegmentMembers(ctx context.Context, entity, segment, cursor string, limit int) ([]string, string, error) {
	if err := checkMembersArgs(entity, segment, limit); err != nil {
		return nil, "", err
	}
	if p.closed.Load() {
		return nil, "", ErrClosed
	}
	p.swap.RLock()
	defer p.swap.RUnlock()
	if p.db == nil {
		return nil, "", p.fault.Err()
	}
	prefix := memberKey(nil, entity, segment, "")
	lower := append(append(bytes.Clone(prefix), cursor...), 0) // the first id after cursor
	if cursor == "" {
		lower = prefix
	}
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, "", fmt.Errorf("cannot list members of %s: %w", segment, err)
	}
	defer it.Close()
	var ids []string
	for ok := it.First(); ok; ok = it.Next() {
		if len(ids) == limit {
			return ids, ids[len(ids)-1], nil
		}
		ids = append(ids, string(it.Key()[len(prefix):]))
	}
	if err := it.Error(); err != nil {
		return nil, "", fmt.Errorf("cannot list members of %s: %w", segment, err)
	}
	return ids, "", nil
}

// Close closes the store. It waits for a Write in progress; reads must
// have returned (stop serving first). Calls after Close return ErrClosed.
func (p *Pebble) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Swap(true) {
		return ErrClosed
	}
	p.swap.Lock()
	defer p.swap.Unlock()
	if p.db == nil {
		return nil
	}
	return p.db.Close()
}

func vectorKey(dst []byte, entity, id string) []byte {
	dst = append(dst, "v/"...)
	dst = append(dst, entity...)
	dst = append(dst, '/')
	return append(dst, id...)
}

func memberKey(dst []byte, entity, segment, id string) []byte {
	dst = append(dst, "m/"...)
	dst = append(dst, entity...)
	dst = append(dst, '/')
	dst = append(dst, segment...)
	dst = append(dst, '/')
	return append(dst, id...)
}

func countKey(dst []byte, entity, segment string) []byte {
	dst = append(dst, "c/"...)
	dst = append(dst, entity...)
	dst = append(dst, '/')
	return append(dst, segment...)
}

// prefixEnd is the first key after every key that starts with prefix
// (prefix ends with '/', so incrementing the last byte is enough).
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	end[len(end)-1]++
	return end
}

// AppendRaw appends the encoded vectors of ids to buf; raw[i] is nil for
// an id the store does not have. See RawGetter.
func (p *Pebble) AppendRaw(ctx context.Context, entity string, ids []string, buf []byte, raw [][]byte) ([]byte, [][]byte, error) {
	if err := checkName("entity", entity); err != nil {
		return buf, raw, err
	}
	if p.closed.Load() {
		return buf, raw, ErrClosed
	}
	raw = raw[:0]
	var kb [64]byte
	for _, id := range ids {
		at := len(buf)
		var found bool
		var err error
		buf, found, err = p.appendRaw(vectorKey(kb[:0], entity, id), buf)
		if err != nil {
			return buf, raw, fmt.Errorf("cannot get %s %q: %w", entity, id, err)
		}
		if !found {
			raw = append(raw, nil)
			continue
		}
		raw = append(raw, buf[at:len(buf):len(buf)])
	}
	return buf, raw, nil
}
