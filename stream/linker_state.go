package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/cockroachdb/pebble"
	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/diskfault"
	"github.com/pulse-rt/pulse/internal/keyfilter"
)

// linkerState is the linker's graph on disk: a copy of pulse.identity's
// links in a Pebble database of its own (<data_dir>/stream/<identity
// topic>-linker), indexed by canonical id, and how far into each partition
// of the topic the copy goes. A linker that starts again reads only the
// topic's records after those positions, and the graph is not held in the
// heap. (Before, every start read the whole topic into the heap: 0.9 s
// and 92 MB at 300k identifiers, 3 s and 250 MB at 900k; a restart in
// place now takes 11-17 ms, docs/BENCHMARKS.md "The linker's start".)
//
// It is an identity.Store. The copy changes only by apply, with the
// records the linker writes to the topic (a link, or a tombstone: an
// identifier forgotten), so the state is the topic's table whichever way
// it was built: folding requests, or reading the topic back. A fold's
// changes go to an indexed batch the graph reads through, committed once
// the fold's Kafka transaction is; a fold that fails drops the batch.
//
// Keys:
//
//	m                                  linkerMeta
//	i/<identifier>                     the identifier's latest link (identity.EncodeLink)
//	c/<uvarint len><canonical id><identifier>   the same link, by person
type linkerState struct {
	db    *pebble.DB
	fault *diskfault.Fault
	b     *pebble.Batch // the open fold's, or the restore's; nil between folds
	meta  linkerMeta
	// known is a Bloom filter of the identifiers under i/, so the lookup
	// of an identifier never linked, the side of most requests, costs no
	// Pebble read. It may hold identifiers the state has not (a fold
	// dropped, a tombstone): a false positive costs the read it would
	// have saved. nil until built: every lookup reads.
	known *keyfilter.Filter
	// A filter is built in the background from a snapshot (startFilter),
	// so a start does not wait for a scan of every identifier; since
	// lists the identifiers apply wrote meanwhile, added to it when it is
	// installed (installFilter); built delivers it.
	building bool
	since    []string
	built    chan filterBuild
}

type filterBuild struct {
	f   *keyfilter.Filter
	err error
}

var (
	lkMeta       = []byte("m")
	lkIdentifier = []byte("i/")
	lkCanonical  = []byte("c/")
)

// linkerMeta is how far the state goes: pos[p] is the offset of the last
// record of identity partition p that it holds (absent: none), next the
// next requests offset, parts and topic the identity topic's partitions
// and id (a topic deleted and made again has another), asOf when
// (Options.Now, unix ms) it was last brought up to date.
type linkerMeta struct {
	Next  int64           `json:"next"`
	Pos   map[int32]int64 `json:"pos"`
	Parts int             `json:"parts"`
	Topic string          `json:"topic"`
	AsOf  int64           `json:"as_of"`
}

func (p *Processor) linkerDir() string {
	return filepath.Join(p.cfg.DataDir, "stream", p.cfg.Kafka.Topics.Identity+"-linker")
}

// openLinkerState opens the database and reads its meta; has is false
// when it holds nothing yet.
func (p *Processor) openLinkerState() (s *linkerState, has bool, err error) {
	s = &linkerState{}
	// Its commits do not sync: the topic is the state's log, and what a
	// machine's crash loses, meta and links together, the next open reads
	// back from the topic after the positions that survived.
	s.db, s.fault, err = openPebble(p.linkerDir(), p.opts.fs, p.log.With("component", "linker"), p.opts.MemTableSize)
	if err != nil {
		return nil, false, fmt.Errorf("cannot open the identity linker's state: %w", err)
	}
	v, closer, err := s.db.Get(lkMeta)
	if errors.Is(err, pebble.ErrNotFound) {
		return s, false, nil
	}
	if err != nil {
		s.close()
		return nil, false, err
	}
	err = json.Unmarshal(v, &s.meta)
	closer.Close()
	if err != nil {
		s.close()
		return nil, false, fmt.Errorf("cannot read the identity linker's state: %w", err)
	}
	return s, true, nil
}

func (s *linkerState) close() {
	s.installFilter(true) // its snapshot closed before the database
	if s.b != nil {
		s.b.Close()
		s.b = nil
	}
	if !s.fault.Wedged() {
		s.db.Close()
	}
}

// clear drops everything: the state is then built from the whole topic.
func (s *linkerState) clear() error {
	if err := s.installFilter(true); err != nil {
		return err
	}
	s.meta, s.known = linkerMeta{}, nil
	return s.fault.Do(func() error { return s.db.DeleteRange([]byte{0}, []byte{0xff}, pebble.NoSync) })
}

// begin opens the batch a fold or a restore writes to and reads through.
func (s *linkerState) begin() {
	if s.b != nil {
		s.b.Close()
	}
	s.b = s.db.NewIndexedBatch()
}

// beginRebuild opens a batch for put: a build of the state from the whole
// topic, which reads nothing back until index.
func (s *linkerState) beginRebuild() {
	if s.b != nil {
		s.b.Close()
	}
	s.b = s.db.NewBatch()
}

// put is apply for a rebuild, in the topic's order: the identifier's
// latest record wins; the index by person is written after, by index.
func (s *linkerState) put(id string, value []byte) {
	if value == nil {
		s.b.Delete(key(lkIdentifier, id), nil)
		return
	}
	s.b.Set(key(lkIdentifier, id), value, nil)
}

// startFilter builds a filter of the identifiers the state holds now,
// in the background; nothing when one is being built. Call it between
// batches: what a batch open now holds would be in neither.
func (s *linkerState) startFilter() {
	if s.building {
		return
	}
	s.building, s.since = true, nil
	snap := s.db.NewSnapshot()
	done := make(chan filterBuild, 1)
	s.built = done
	go func() {
		f, err := keyfilter.Build(snap, lkIdentifier)
		snap.Close()
		done <- filterBuild{f, err}
	}()
}

// installFilter installs a filter startFilter built, with the identifiers
// written since its snapshot; wait waits for it.
func (s *linkerState) installFilter(wait bool) error {
	if !s.building {
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
	s.building = false
	if b.err != nil {
		s.since = nil
		return fmt.Errorf("cannot build the identity linker's filter: %w", b.err)
	}
	for _, id := range s.since {
		b.f.Add(id)
	}
	s.known, s.since = b.f, nil
	return nil
}

// index writes the index by person of a rebuild's links (put), with the
// open batch committed first; a batch is open for the meta after it.
func (s *linkerState) index() error {
	if err := s.fault.Commit(s.b, pebble.NoSync); err != nil {
		return err
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lkIdentifier, UpperBound: prefixEnd(lkIdentifier)})
	if err != nil {
		return err
	}
	s.beginRebuild()
	for it.First(); it.Valid(); it.Next() {
		canon, err := linkCanonical(it.Value())
		if err != nil {
			it.Close()
			return err
		}
		s.b.Set(append(canonicalPrefix(canon), it.Key()[len(lkIdentifier):]...), it.Value(), nil)
		if s.b.Len() > 16<<20 {
			if err := s.fault.Commit(s.b, pebble.NoSync); err != nil {
				it.Close()
				return err
			}
			s.beginRebuild()
		}
	}
	return it.Close()
}

// abort drops the open batch.
func (s *linkerState) abort() {
	if s.b != nil {
		s.b.Close()
		s.b = nil
	}
}

// commit writes the open batch with the meta m.
func (s *linkerState) commit(m linkerMeta) error {
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	s.b.Set(lkMeta, v, nil)
	if err := s.fault.Commit(s.b, pebble.NoSync); err != nil {
		return fmt.Errorf("cannot commit the identity linker's state: %w", err)
	}
	s.b.Close()
	s.b = nil
	s.meta = m
	return nil
}

// size is the open batch's size in bytes.
func (s *linkerState) size() int { return s.b.Len() }

func (s *linkerState) get(k []byte) ([]byte, bool, error) {
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
	k := append(slices.Clip(lkCanonical), binary.AppendUvarint(nil, uint64(len(canon)))...)
	return append(k, canon...)
}

// apply writes one record of the identity topic: the link of identifier
// id (value), or its tombstone (value nil).
func (s *linkerState) apply(id string, value []byte) error {
	ik := key(lkIdentifier, id)
	old, ok, err := s.link(id)
	if err != nil {
		return err
	}
	if ok {
		canon, err := linkCanonical(old)
		if err != nil {
			return err
		}
		s.b.Delete(append(canonicalPrefix(canon), id...), nil)
	}
	if value == nil {
		s.b.Delete(ik, nil)
		return nil
	}
	canon, err := linkCanonical(value)
	if err != nil {
		return err
	}
	if s.known != nil {
		s.known.Add(id)
	}
	if s.building {
		s.since = append(s.since, id)
	}
	s.b.Set(ik, value, nil)
	s.b.Set(append(canonicalPrefix(canon), id...), value, nil)
	return nil
}

// link is the latest link of identifier id, when it has one.
func (s *linkerState) link(id string) ([]byte, bool, error) {
	if s.known != nil && !s.known.MayHave(id) {
		return nil, false, nil
	}
	return s.get(key(lkIdentifier, id))
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
func (s *linkerState) Root(id identity.Identifier) (identity.Identifier, bool, error) {
	v, ok, err := s.link(id.String())
	if err != nil || !ok {
		return identity.Identifier{}, false, err
	}
	canon, err := linkCanonical(v)
	if err != nil {
		return identity.Identifier{}, false, err
	}
	for _, root := range []identity.Identifier{identity.User(canon), identity.Anonymous(canon)} {
		if _, ok, err := s.get(append(canonicalPrefix(canon), root.String()...)); err != nil {
			return identity.Identifier{}, false, err
		} else if ok {
			return root, true, nil
		}
	}
	return identity.Identifier{}, false, fmt.Errorf("identity linker state: no member of canonical id %q is its root", canon)
}

// Profile implements identity.Store: the members of root's canonical id,
// sorted by identifier; nil when it has none.
func (s *linkerState) Profile(root identity.Identifier) (*identity.Profile, error) {
	prefix := canonicalPrefix(root.Value)
	o := &pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)}
	var it *pebble.Iterator
	var err error
	if s.b != nil {
		it, err = s.b.NewIter(o)
	} else {
		it, err = s.db.NewIter(o)
	}
	if err != nil {
		return nil, err
	}
	var p *identity.Profile
	for it.First(); it.Valid(); it.Next() {
		l, err := identity.DecodeLink(it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		id, err := identity.ParseIdentifier(string(it.Key()[len(prefix):]))
		if err != nil {
			it.Close()
			return nil, err
		}
		if p == nil {
			p = &identity.Profile{Root: root}
		}
		p.Members = append(p.Members, identity.Member{ID: id, At: l.At, MessageID: l.MessageID})
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	return p, nil
}
