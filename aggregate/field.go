package aggregate

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
)

// fieldPath is a compiled Feature.Field: the same paths event.Lookup reads,
// split once at Compile time.
type fieldPath struct {
	root byte     // 'p'roperties, 't'raits, 'c'ontext, 'i'ntegrations, or 0 for a top-level field
	top  string   // the top-level field when root == 0
	keys []string // the path inside the map
}

var topFields = []string{"type", "messageId", "userId", "anonymousId", "previousId", "groupId",
	"event", "name", "featureSet", "timestamp", "receivedAt"}

// parseField parses a feature's field. whole allows a bare map
// (`traits`), for last_by_key, which folds every key of the map.
func parseField(path string, whole bool) (fieldPath, error) {
	parts := strings.Split(path, ".")
	for _, p := range parts {
		if p == "" {
			return fieldPath{}, fmt.Errorf("invalid path %q: empty segment", path)
		}
	}
	var fp fieldPath
	switch parts[0] {
	case "properties":
		fp.root = 'p'
	case "traits":
		fp.root = 't'
	case "context":
		fp.root = 'c'
	case "integrations":
		fp.root = 'i'
	default:
		if !contains(topFields, parts[0]) {
			return fp, fmt.Errorf("unknown path %q (want properties.<key>, traits.<key>, context.<key> or one of %s)",
				path, strings.Join(topFields, ", "))
		}
		if len(parts) > 1 {
			return fp, fmt.Errorf("invalid path %q: %s has no fields", path, parts[0])
		}
		fp.top = parts[0]
		return fp, nil
	}
	if len(parts) == 1 {
		if whole {
			return fp, nil
		}
		return fp, fmt.Errorf("invalid path %q: name a key inside %s, e.g. %s.revenue", path, parts[0], parts[0])
	}
	fp.keys = parts[1:]
	return fp, nil
}

// lookup returns the value at the path, as event.Lookup would.
func (fp *fieldPath) lookup(e *event.Event) (any, bool) {
	var m map[string]any
	switch fp.root {
	case 'p':
		m = e.Properties
	case 't':
		m = e.Traits
	case 'c':
		m = e.Context
	case 'i':
		m = e.Integrations
	default:
		return e.Lookup(fp.top)
	}
	if len(fp.keys) == 0 {
		return m, m != nil // the whole map (last_by_key)
	}
	last := len(fp.keys) - 1
	for i, k := range fp.keys {
		v, ok := m[k]
		if !ok {
			return nil, false
		}
		if i == last {
			return v, true
		}
		if m, ok = v.(map[string]any); !ok {
			return nil, false
		}
	}
	return nil, false
}

// whereEnv is what a `where` filter sees of an event.
type whereEnv struct {
	Type        string         `expr:"type"`
	Event       string         `expr:"event"`
	Name        string         `expr:"name"`
	UserID      string         `expr:"userId"`
	AnonymousID string         `expr:"anonymousId"`
	GroupID     string         `expr:"groupId"`
	MessageID   string         `expr:"messageId"`
	Properties  map[string]any `expr:"properties"`
	Traits      map[string]any `expr:"traits"`
	Context     map[string]any `expr:"context"`
	Timestamp   float64        `expr:"timestamp"` // epoch ms
}

func (w *whereEnv) set(e *event.Event) {
	*w = whereEnv{
		Type:        string(e.Type),
		Event:       e.Event,
		Name:        e.Name,
		UserID:      e.UserID,
		AnonymousID: e.AnonymousID,
		GroupID:     e.GroupID,
		MessageID:   e.MessageID,
		Properties:  e.Properties,
		Traits:      e.Traits,
		Context:     e.Context,
		Timestamp:   float64(e.Timestamp.UnixMilli()),
	}
}

// fingerprint identifies what a feature's state means: two definitions with
// the same fingerprint can share state. The name is not part of it, so a
// renamed feature keeps its state.
func fingerprint(d config.Feature, ev string, n int) uint64 {
	h := xxhash.New()
	var buf [8]byte
	put := func(s string) {
		binary.LittleEndian.PutUint64(buf[:], uint64(len(s)))
		h.Write(buf[:])
		h.WriteString(s)
	}
	put("pulse.aggregate/v1") // bump when a payload layout changes
	put(d.Agg)
	put(ev)
	put(d.Type)
	put(d.Where)
	put(d.Field)
	binary.LittleEndian.PutUint64(buf[:], uint64(d.Window.D().Milliseconds()))
	h.Write(buf[:])
	binary.LittleEndian.PutUint64(buf[:], uint64(n))
	h.Write(buf[:])
	return h.Sum64()
}
