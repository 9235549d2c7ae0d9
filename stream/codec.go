package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/pulse-rt/pulse/segment"
)

// Keys of the changelog (pulse.state). Entities are "e/<id>"; everything
// else a task keeps starts with "__", which no entity key does.
const (
	clEntityPrefix = "e/"
	clOffsetKey    = "__offset"
	clSeenPrefix   = "__seen/"
	clAliasPrefix  = "__alias/"
	clFenceKey     = "__restore"
	// clActivationPrefix + fingerprint hex: the input offset the feature
	// started counting at in this partition (decimal).
	clActivationPrefix = "__activation/"
	// clSeededPrefix + fingerprint hex + "/" + id: the entity's state of
	// the feature has had its seed merged.
	clSeededPrefix = "__seeded/"
	// clSeedsKey: the next seeds-topic offset to read (varint).
	clSeedsKey = "__seeds"
	// clResolvedKey: the next resolved-topic offset to read (varint).
	clResolvedKey = "__resolved"
	// clUndecidedPrefix + fingerprint hex + "/" + input offset + "/" + id:
	// a duplicate of an event from before the feature's activation, kept
	// (the event) until the entity's seed says whether it counts.
	clUndecidedPrefix = "__undecided/"
	// clForgotPrefix + id: the entity was deleted on request at the time
	// the value holds (forget; unix ms, 8 bytes BE).
	clForgotPrefix = "__forgot/"
	// clInputKey: the id of the input topic the state counts (Kafka's
	// topic id): a topic made again under the same name has another.
	clInputKey = "__input"
)

// Keys of a task's Pebble database.
var (
	pkMeta         = []byte("m")
	pkStoreRewrite = []byte("mw") // present: the online store lost writes; every entity is to be written again (rewriteAll)
	pkEntity       = []byte("e/") // e/<id> -> due ms (8 bytes BE) + entity value
	pkTimer        = []byte("t/") // t/<due ms BE><id> -> nothing
	pkSeen         = []byte("d/") // d/<messageId> -> nothing
	pkBatch        = []byte("s/") // s/<input offset BE>[<part BE uint32>] -> seenBatch (seenKey)
	pkAlias        = []byte("a/") // a/<anonymousId> -> userId
	pkActive       = []byte("v/") // v/<fingerprint BE> -> activation offset (decimal)
	pkSeeded       = []byte("z/") // z/<fingerprint BE><id> -> the seed's Seen offset (varint)
	pkUndec        = []byte("x/") // x/<fingerprint BE><uvarint len id><id><input offset BE> -> event
	pkForgot       = []byte("f/") // f/<id> -> when the entity was deleted on request (unix ms, 8 bytes BE)
)

func undecidedPrefix(fp uint64, id string) []byte {
	k := binary.BigEndian.AppendUint64(append([]byte(nil), pkUndec...), fp)
	k = binary.AppendUvarint(k, uint64(len(id)))
	return append(k, id...)
}

func undecidedKey(fp uint64, id string, offset int64) []byte {
	return binary.BigEndian.AppendUint64(undecidedPrefix(fp, id), uint64(offset))
}

// splitUndecidedKey reads an undecided key without its prefix.
func splitUndecidedKey(rest []byte) (fp uint64, id string, offset int64, ok bool) {
	if len(rest) < 8+1+8 {
		return 0, "", 0, false
	}
	fp = binary.BigEndian.Uint64(rest)
	n, k := binary.Uvarint(rest[8:])
	if k <= 0 || uint64(len(rest)-8-k) != n+8 {
		return 0, "", 0, false
	}
	id = string(rest[8+k : 8+k+int(n)])
	return fp, id, int64(binary.BigEndian.Uint64(rest[len(rest)-8:])), true
}

func activationKey(fp uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), pkActive...), fp)
}

func seededKey(fp uint64, id string) []byte {
	k := binary.BigEndian.AppendUint64(append(make([]byte, 0, len(pkSeeded)+8+len(id)), pkSeeded...), fp)
	return append(k, id...)
}

var errCorrupt = errors.New("corrupt stream state")

func key(prefix []byte, s string) []byte {
	k := make([]byte, 0, len(prefix)+len(s))
	return append(append(k, prefix...), s...)
}

func timerKey(due int64, id string) []byte {
	k := make([]byte, 0, len(pkTimer)+8+len(id))
	k = append(k, pkTimer...)
	k = binary.BigEndian.AppendUint64(k, uint64(due))
	return append(k, id...)
}

// seenKey is the Pebble key of part part of the seen ids of the input
// batch ending at offset: s/<offset BE>, then <part BE uint32> for part >
// 0, so a batch's parts sort together, in order, before the next batch.
func seenKey(offset int64, part int) []byte {
	k := binary.BigEndian.AppendUint64(append(make([]byte, 0, len(pkBatch)+12), pkBatch...), uint64(offset))
	if part > 0 {
		k = binary.BigEndian.AppendUint32(k, uint32(part))
	}
	return k
}

// splitSeenKey reads a seenKey without its prefix.
func splitSeenKey(rest []byte) (offset int64, part int, ok bool) {
	switch len(rest) {
	case 8:
		return int64(binary.BigEndian.Uint64(rest)), 0, true
	case 12:
		part = int(binary.BigEndian.Uint32(rest[8:]))
		return int64(binary.BigEndian.Uint64(rest)), part, part > 0
	}
	return 0, 0, false
}

// seenChangelogKey is the changelog key of part part of the seen ids of
// the input batch ending at offset: __seen/<offset>, then .<part> for
// part > 0 (the key of a batch written in one part, as before parts).
func seenChangelogKey(offset int64, part int) string {
	k := clSeenPrefix + strconv.FormatInt(offset, 10)
	if part > 0 {
		k += "." + strconv.Itoa(part)
	}
	return k
}

// parseSeenChangelogKey reads a seenChangelogKey without its prefix.
func parseSeenChangelogKey(rest string) (offset int64, part int, err error) {
	o, p, dotted := strings.Cut(rest, ".")
	if offset, err = strconv.ParseInt(o, 10, 64); err != nil || offset < 0 {
		return 0, 0, fmt.Errorf("seen ids key %q: offset is not a number", clSeenPrefix+rest)
	}
	if dotted {
		if part, err = strconv.Atoi(p); err != nil || part <= 0 || part > math.MaxUint32 {
			return 0, 0, fmt.Errorf("seen ids key %q: part is not a positive number", clSeenPrefix+rest)
		}
	}
	return offset, part, nil
}

// prefixEnd is the first key after every key starting with p.
func prefixEnd(p []byte) []byte {
	e := append([]byte(nil), p...)
	e[len(e)-1]++
	return e
}

// meta is the Pebble record of how far a task's state goes.
type meta struct {
	next      int64    // next input offset to read
	changelog int64    // changelog offset the state includes, -1 = none
	segFP     uint64   // segment Set fingerprint the memberships were evaluated with
	pending   []string // entities of the last transaction (store write may be missing)
	seedNext  int64    // next offset of the seeds topic partition to read
	// resolvedNext is the next offset of the resolved topic partition.
	resolvedNext int64
	// storeMark is one more than the mark (a changelog offset) the last
	// store write before this state's commit set in a Marked store; 0:
	// none known (state restored from the changelog, or older builds).
	storeMark int64
	// asOf is when (Options.Now, unix ms) the state was last brought
	// up to date with the changelog: a commit or a restore; 0: unknown
	// (older builds). A state older than the changelog keeps tombstones
	// is restored in full (task.dropIfStale).
	asOf int64
	// input is the id of the input topic the state counts (clInputKey);
	// "": unknown (older builds, a state just cleared).
	input string
}

func (m *meta) encode() []byte {
	b := binary.AppendVarint(nil, m.next)
	b = binary.AppendVarint(b, m.changelog)
	b = binary.LittleEndian.AppendUint64(b, m.segFP)
	b = appendStrings(b, m.pending)
	b = binary.AppendVarint(b, m.seedNext)
	b = binary.AppendVarint(b, m.resolvedNext)
	b = binary.AppendVarint(b, m.storeMark)
	b = binary.AppendVarint(b, m.asOf)
	return appendStrings(b, []string{m.input})
}

func decodeMeta(b []byte) (meta, error) {
	var m meta
	r := reader{b: b}
	m.next = r.varint()
	m.changelog = r.varint()
	m.segFP = r.uint64()
	m.pending = r.strings()
	if len(r.b) > 0 { // written before seeds existed: 0
		m.seedNext = r.varint()
	}
	if len(r.b) > 0 { // written before identity resolution: 0
		m.resolvedNext = r.varint()
	}
	if len(r.b) > 0 { // written before store marks: 0, none known
		m.storeMark = r.varint()
	}
	if len(r.b) > 0 { // written before the state's age was kept: 0, unknown
		m.asOf = r.varint()
	}
	if len(r.b) > 0 { // written before the input topic's id was kept: unknown
		if ss := r.strings(); len(ss) == 1 {
			m.input = ss[0]
		}
	}
	if r.err {
		return m, errCorrupt
	}
	return m, nil
}

// offsetValue is the value of the changelog's __offset record.
func offsetValue(next int64, pending []string) []byte {
	return appendStrings(binary.AppendVarint(nil, next), pending)
}

func decodeOffsetValue(b []byte) (next int64, pending []string, err error) {
	r := reader{b: b}
	next = r.varint()
	pending = r.strings()
	if r.err {
		return 0, nil, errCorrupt
	}
	return next, pending, nil
}

// entityValue is the changelog value of an entity: its aggregate State,
// its segment Membership and, where the config has automatic features
// (traits, RFM), autoMark and its automatic record (auto.go), so an
// entity's change is one changelog record and one Pebble key. A value
// without the mark was written before the record moved in (its record,
// if any, is under r/<id>), or by a config without automatic features.
func entityValue(dst, state, membership []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(state)))
	dst = append(dst, state...)
	return append(dst, membership...)
}

// autoMark starts the automatic record in an entity value.
const autoMark = 'A'

// splitEntityValue splits an entity value into its parts; auto is the
// encoded automatic record, nil when the value holds none.
func splitEntityValue(b []byte) (state, membership, auto []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, nil, nil, errCorrupt
	}
	state, rest := b[k:k+int(n)], b[k+int(n):]
	m, err := segment.MembershipLen(rest)
	if err != nil {
		return nil, nil, nil, err
	}
	membership, rest = rest[:m], rest[m:]
	if len(rest) > 0 {
		if rest[0] != autoMark {
			return nil, nil, nil, errCorrupt
		}
		auto = rest[1:]
	}
	return state, membership, auto, nil
}

// localValue is the Pebble value of an entity: its timer's due time (0 =
// none) then the changelog value.
func localValue(due int64, cl []byte) []byte {
	b := make([]byte, 8, 8+len(cl))
	binary.BigEndian.PutUint64(b, uint64(due))
	return append(b, cl...)
}

func splitLocalValue(b []byte) (due int64, cl []byte, err error) {
	if len(b) < 8 {
		return 0, nil, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(b)), b[8:], nil
}

// seenBatch is the message ids one input batch saw, or one part of them
// (emitSeen): kept for the allowed lateness so a duplicate arriving later
// is still recognised.
type seenBatch struct {
	seenMs int64
	ids    []string
}

func (s *seenBatch) encode() []byte {
	return appendStrings(binary.AppendVarint(nil, s.seenMs), s.ids)
}

func decodeSeenBatch(b []byte) (seenBatch, error) {
	r := reader{b: b}
	s := seenBatch{seenMs: r.varint(), ids: r.strings()}
	if r.err {
		return s, errCorrupt
	}
	return s, nil
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

type reader struct {
	b   []byte
	err bool
}

func (r *reader) varint() int64 {
	v, k := binary.Varint(r.b)
	if k <= 0 {
		r.err = true
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *reader) uvarint() uint64 {
	v, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.err = true
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *reader) uint64() uint64 {
	if len(r.b) < 8 {
		r.err = true
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) strings() []string {
	n := r.uvarint()
	if r.err || n > uint64(len(r.b)) {
		r.err = true
		return nil
	}
	out := make([]string, 0, n)
	for range n {
		l := r.uvarint()
		if r.err || l > uint64(len(r.b)) {
			r.err = true
			return nil
		}
		out = append(out, string(r.b[:l]))
		r.b = r.b[l:]
	}
	return out
}
