// Package identitydb keeps a copy of the identity table, pulse.identity's
// links, in a Pebble database: the stream's linker folds link requests
// over it (an identity.Store), and the scorer answers a person's
// identifiers from it. Neither holds the table in the heap (about 280
// bytes per identifier when they did), and a copy kept on disk is brought
// up to date from the topic's records after its positions (Meta) instead
// of the whole topic (docs/BENCHMARKS.md, "The linker's start").
//
// The copy changes only by Apply (or Put and Index, a build from nothing)
// with the topic's own records: a link, or a tombstone (an identifier
// forgotten). So it is the topic's table whichever way it was built.
// Writes go to a batch (Begin, Commit with the positions it reaches,
// Abort); Root and Profile read through the open batch (the linker's fold
// sees its own decisions), Canonical and Links read what was committed
// and are safe beside the one writer; the rest is the writer's.
package identitydb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"github.com/cockroachdb/pebble/vfs"
	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/diskfault"
	"github.com/pulse-rt/pulse/internal/keyfilter"
)

// DB is one copy of the identity table; see the package doc.
//
// Keys:
//
//	m                                            Meta
//	i/<identifier>                               the identifier's latest link (identity.EncodeLink)
//	c/<uvarint len><canonical id><identifier>    the same link, by person
type DB struct {
	db    *pebble.DB
	fault *diskfault.Fault
	b     *pebble.Batch // the writer's open batch; nil between them
	meta  Meta
	// known is a Bloom filter of the identifiers under i/, so the lookup
	// of an identifier never linked, the side of most requests, costs no
	// Pebble read. It may hold identifiers the copy has not (a batch
	// dropped, a tombstone): a false positive costs the read it would
	// have saved. nil until built: every lookup reads.
	known *keyfilter.Filter
	// profiles is the iterator Profile reads the open batch with.
	profiles *pebble.Iterator
	// A filter is built in the background from a snapshot (StartFilter),
	// so a start does not wait for a scan of every identifier; since
	// lists the identifiers Apply wrote meanwhile, added to it when it is
	// installed (InstallFilter); built delivers it (nil: none building).
	since []string
	built chan filterBuild
}

type filterBuild struct {
	f   *keyfilter.Filter
	err error
}

var (
	keyMeta       = []byte("m")
	keyIdentifier = []byte("i/")
	keyCanonical  = []byte("c/")
)

// Meta is how far the copy goes: Pos[p] is the offset of the last record
// of identity partition p that it holds (absent: none); Parts and Topic
// the identity topic's partitions and id (a topic deleted and made again
// has another); AsOf when (unix ms) it was last brought up to date; Next
// is the linker's (its next requests offset).
type Meta struct {
	Next  int64           `json:"next"`
	Pos   map[int32]int64 `json:"pos"`
	Parts int             `json:"parts"`
	Topic string          `json:"topic"`
	AsOf  int64           `json:"as_of"`
}

// Options say how Open opens the database.
type Options struct {
	FS           vfs.FS // nil: the disk
	Log          *slog.Logger
	MemTableSize int // 0: Pebble's default
}

// Open opens the copy in dir; has is false when it holds nothing yet.
// Its commits do not sync: the topic is the copy's log, and what a
// machine's crash loses, meta and links together, the next catch-up reads
// back from the topic after the positions that survived.
func Open(dir string, o Options) (s *DB, has bool, err error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	po := &pebble.Options{FS: o.FS, MemTableSize: uint64(max(o.MemTableSize, 0))}
	cache := pebble.NewCache(16 << 20)
	defer cache.Unref() // the DB holds its own reference
	po.Cache = cache
	po.Levels = make([]pebble.LevelOptions, 7)
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	s = &DB{fault: diskfault.Watch(po, o.Log, "identity")}
	if s.db, err = pebble.Open(dir, po); err == nil {
		err = s.fault.Err()
	}
	if err != nil {
		if s.db != nil {
			s.db.Close()
		}
		return nil, false, fmt.Errorf("cannot open the identity table's copy in %s: %w", dir, err)
	}
	v, closer, err := s.db.Get(keyMeta)
	if errors.Is(err, pebble.ErrNotFound) {
		return s, false, nil
	}
	if err != nil {
		s.Close()
		return nil, false, err
	}
	err = json.Unmarshal(v, &s.meta)
	closer.Close()
	if err != nil {
		s.Close()
		return nil, false, fmt.Errorf("cannot read the identity table's copy in %s: %w", dir, err)
	}
	return s, true, nil
}

// Meta is how far the copy goes, as its last Commit left it (empty after
// Clear).
func (s *DB) Meta() Meta { return s.meta }

// HasFilter reports whether the filter of known identifiers is in place.
func (s *DB) HasFilter() bool { return s.known != nil }

// NeedsFilter reports whether StartFilter should build the filter of
// known identifiers: there is none, or the one there is too full.
func (s *DB) NeedsFilter() bool { return s.known == nil || s.known.Full() }

func (s *DB) Close() {
	s.InstallFilter(true) // its snapshot closed before the database
	s.dropBatch()
	if !s.fault.Wedged() {
		s.db.Close()
	}
}

// Clear drops everything, an open batch too: the copy is then built from
// the whole topic.
func (s *DB) Clear() error {
	s.dropBatch()
	if err := s.InstallFilter(true); err != nil {
		return err
	}
	s.meta, s.known = Meta{}, nil
	return s.fault.Do(func() error { return s.db.DeleteRange([]byte{0}, []byte{0xff}, pebble.NoSync) })
}

// Begin opens the batch the writer writes to and Root and Profile read
// through.
func (s *DB) Begin() {
	s.dropBatch()
	s.b = s.db.NewIndexedBatch()
}

// BeginRebuild opens a batch for put: a build of the copy from the whole
// topic, which reads nothing back until index.
func (s *DB) BeginRebuild() {
	s.dropBatch()
	s.b = s.db.NewBatch()
}

// Put is apply for a rebuild, in the topic's order: the identifier's
// latest record wins; the index by person is written after, by index.
func (s *DB) Put(id string, value []byte) {
	if value == nil {
		s.b.Delete(key(keyIdentifier, id), nil)
		return
	}
	s.b.Set(key(keyIdentifier, id), value, nil)
}

// StartFilter builds a filter of the identifiers the copy holds now,
// in the background; nothing when one is being built. Call it between
// batches: what a batch open now holds would be in neither.
func (s *DB) StartFilter() {
	if s.built != nil {
		return
	}
	s.since = nil
	snap := s.db.NewSnapshot()
	done := make(chan filterBuild, 1)
	s.built = done
	go func() {
		f, err := keyfilter.Build(snap, keyIdentifier)
		snap.Close()
		done <- filterBuild{f, err}
	}()
}

// InstallFilter installs a filter StartFilter built, with the identifiers
// written since its snapshot; wait waits for it.
func (s *DB) InstallFilter(wait bool) error {
	if s.built == nil {
		return nil
	}
	var b filterBuild
	if wait {
		b = <-s.built
	} else {
		select {
		case b = <-s.built:
		default:
			return nil
		}
	}
	s.built = nil
	if b.err != nil {
		s.since = nil
		return fmt.Errorf("cannot build the identity copy's filter: %w", b.err)
	}
	for _, id := range s.since {
		b.f.Add(id)
	}
	s.known, s.since = b.f, nil
	return nil
}

// Index writes the index by person of a rebuild's links (put), with the
// open batch committed first; a batch is open for the meta after it.
func (s *DB) Index() error {
	if err := s.commitBatch(); err != nil {
		return err
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: keyIdentifier, UpperBound: prefixEnd(keyIdentifier)})
	if err != nil {
		return err
	}
	s.BeginRebuild()
	for it.First(); it.Valid(); it.Next() {
		canon, err := linkCanonical(it.Value())
		if err != nil {
			it.Close()
			return err
		}
		s.b.Set(append(canonicalPrefix(canon), it.Key()[len(keyIdentifier):]...), it.Value(), nil)
		if s.b.Len() > partSize {
			if err := s.commitBatch(); err != nil {
				it.Close()
				return err
			}
			s.BeginRebuild()
		}
	}
	return it.Close()
}

// partSize is the batch a long catch-up commits in parts of (CommitPart).
const partSize = 16 << 20

// CommitPart commits the open batch, without the meta, and opens another
// of its kind, once the batch passes partSize: a long catch-up in parts.
// A catch-up cut after a part starts again from the positions before it.
func (s *DB) CommitPart() error {
	if s.b.Len() <= partSize {
		return nil
	}
	indexed := s.b.Indexed()
	if err := s.commitBatch(); err != nil {
		return err
	}
	if indexed {
		s.Begin()
	} else {
		s.BeginRebuild()
	}
	return nil
}

// Abort drops the open batch.
func (s *DB) Abort() {
	s.dropBatch()
}

// Commit writes the open batch with the meta m.
func (s *DB) Commit(m Meta) error {
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	s.b.Set(keyMeta, v, nil)
	if err := s.commitBatch(); err != nil {
		return fmt.Errorf("cannot commit the identity copy: %w", err)
	}
	s.dropBatch()
	s.meta = m
	return nil
}

// commitBatch commits the open batch; it stays open (until dropBatch).
func (s *DB) commitBatch() error {
	s.closeProfiles()
	return s.fault.Commit(s.b, pebble.NoSync)
}

// dropBatch closes the open batch, if any, and the iterator over it.
func (s *DB) dropBatch() {
	s.closeProfiles()
	if s.b != nil {
		s.b.Close()
		s.b = nil
	}
}

// closeProfiles closes the iterator Profile keeps over the open batch.
func (s *DB) closeProfiles() {
	if s.profiles != nil {
		s.profiles.Close()
		s.profiles = nil
	}
}

func (s *DB) get(k []byte) ([]byte, bool, error) {
	var v []byte
	var closer interface{ Close() error }
	var err error
	if s.b != nil {
		v, closer, err = s.b.Get(k)
	} else {
		v, closer, err = s.db.Get(k)
	}
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v = slices.Clone(v)
	closer.Close()
	return v, true, nil
}

func canonicalPrefix(canon string) []byte {
	k := append(slices.Clip(keyCanonical), binary.AppendUvarint(nil, uint64(len(canon)))...)
	return append(k, canon...)
}

// Apply writes one record of the identity topic: the link of identifier
// id (value), or its tombstone (value nil).
func (s *DB) Apply(id string, value []byte) error {
	// The new link read first: one it cannot read changes nothing.
	canon := ""
	if value != nil {
		var err error
		if canon, err = linkCanonical(value); err != nil {
			return err
		}
	}
	ik := key(keyIdentifier, id)
	old, ok, err := s.link(id)
	if err != nil {
		return err
	}
	if ok {
		was, err := linkCanonical(old)
		if err != nil {
			return err
		}
		s.b.Delete(append(canonicalPrefix(was), id...), nil)
	}
	if value == nil {
		s.b.Delete(ik, nil)
		return nil
	}
	if s.known != nil {
		s.known.Add(id)
	}
	if s.built != nil {
		s.since = append(s.since, id)
	}
	s.b.Set(ik, value, nil)
	s.b.Set(append(canonicalPrefix(canon), id...), value, nil)
	return nil
}

// link is the latest link of identifier id, when it has one.
func (s *DB) link(id string) ([]byte, bool, error) {
	if s.known != nil && !s.known.MayHave(id) {
		return nil, false, nil
	}
	return s.get(key(keyIdentifier, id))
}

// linkCanonical reads a link's canonical id alone, cheaper than
// identity.DecodeLink (no time to parse); a value without one is an error.
func linkCanonical(v []byte) (string, error) {
	var l struct {
		CanonicalID string `json:"canonical_id"`
	}
	if err := json.Unmarshal(v, &l); err != nil {
		return "", fmt.Errorf("cannot decode identity link: %w", err)
	}
	if l.CanonicalID == "" {
		return "", errors.New("cannot decode identity link: no canonical_id")
	}
	return l.CanonicalID, nil
}

// Root implements identity.Store: the root of the profile of the
// identifier's canonical id, as identity.RestoreMemStore chooses it (the
// member whose value is the canonical id, a userId before an anonymousId).
func (s *DB) Root(id identity.Identifier) (identity.Identifier, bool, error) {
	v, ok, err := s.link(id.String())
	if err != nil || !ok {
		return identity.Identifier{}, false, err
	}
	canon, err := linkCanonical(v)
	if err != nil {
		return identity.Identifier{}, false, err
	}
	if id == identity.User(canon) {
		return id, true, nil // the root itself: no read
	}
	for _, root := range []identity.Identifier{identity.User(canon), identity.Anonymous(canon)} {
		if _, ok, err := s.get(append(canonicalPrefix(canon), root.String()...)); err != nil {
			return identity.Identifier{}, false, err
		} else if ok {
			return root, true, nil
		}
	}
	return identity.Identifier{}, false, fmt.Errorf("identity copy: no member of canonical id %q is its root", canon)
}

// Profile implements identity.Store: the members of root's canonical id,
// sorted by identifier; nil when it has none.
func (s *DB) Profile(root identity.Identifier) (*identity.Profile, error) {
	prefix := canonicalPrefix(root.Value)
	o := &pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)}
	var it *pebble.Iterator
	var err error
	switch {
	case s.b != nil && s.profiles != nil:
		// One iterator for the batch's life: a new one per profile
		// costs more than the members read (each level's files opened
		// and sought again). SetOptions shows it the batch's writes
		// since; the database under it stays as when it was made,
		// which is the database now: only this writer commits, and
		// commitBatch closes the iterator first.
		it = s.profiles
		it.SetOptions(o)
	case s.b != nil:
		if it, err = s.b.NewIter(o); err != nil {
			return nil, err
		}
		s.profiles = it
	default:
		if it, err = s.db.NewIter(o); err != nil {
			return nil, err
		}
		defer it.Close()
	}
	var p *identity.Profile
	for it.First(); it.Valid(); it.Next() {
		l, err := identity.DecodeLink(it.Value())
		if err != nil {
			return nil, err
		}
		id, err := identity.ParseIdentifier(string(it.Key()[len(prefix):]))
		if err != nil {
			return nil, err
		}
		if p == nil {
			p = &identity.Profile{Root: root}
		}
		p.Members = append(p.Members, identity.Member{ID: id, At: l.At, MessageID: l.MessageID})
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	return p, nil
}

// Canonical is the canonical id identifier (kind:value) is linked to, as
// committed; ok is false when it is linked to none. Safe beside the
// writer.
func (s *DB) Canonical(identifier string) (string, bool, error) {
	v, closer, err := s.db.Get(key(keyIdentifier, identifier))
	if errors.Is(err, pebble.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	defer closer.Close()
	c, err := linkCanonical(v)
	return c, err == nil, err
}

// Links lists the latest link of each identifier of the person with
// canonical id c, as committed, oldest first (then by identifier); none
// when c has none. Safe beside the writer.
func (s *DB) Links(c string) ([]identity.Link, error) {
	prefix := canonicalPrefix(c)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	var out []identity.Link
	for it.First(); it.Valid(); it.Next() {
		l, err := identity.DecodeLink(it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		out = append(out, l)
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b identity.Link) int { return a.At.Compare(b.At) })
	return out, nil
}

// Stale says why a copy whose meta is m cannot be caught up from its
// positions on a topic with id topic and the given offsets per partition
// (ends: the fences, or the end offsets) when the topic keeps tombstones
// keep (its delete.retention.ms), at now: "" when it can. old is true for
// a copy last brought up to date more than half of keep ago, which may
// hold identifiers deleted since whose tombstones compaction has removed.
func Stale(m Meta, topic string, ends map[int32]int64, keep time.Duration, now time.Time) (reason string, old bool) {
	switch {
	case m.Topic != topic:
		return "the identity topic is another (recreated)", false
	case m.Parts != len(ends):
		return "the identity topic's partitions changed", false
	}
	for part, end := range ends {
		if pos, ok := m.Pos[part]; ok && pos >= end {
			return "the identity topic is behind the copy (recreated?)", false
		}
	}
	if age := now.Sub(time.UnixMilli(m.AsOf)); age >= keep/2 {
		return fmt.Sprintf("the copy is %s old, the topic keeps tombstones %s", age.Round(time.Second), keep), true
	}
	return "", false
}

func key(prefix []byte, s string) []byte {
	k := make([]byte, 0, len(prefix)+len(s))
	return append(append(k, prefix...), s...)
}

func prefixEnd(p []byte) []byte {
	e := append([]byte(nil), p...)
	e[len(e)-1]++ // prefixes end below 0xff: UTF-8 ids
	return e
}
