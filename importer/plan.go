package importer

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/event"
)

// RowError is why one row was refused: its row number, the column at
// fault (or the event field, when no column fills it), the value and the
// reason.
type RowError struct {
	Row    int
	Column string
	Value  string
	Reason string
}

func (e *RowError) Error() string {
	if e.Column == "" {
		return fmt.Sprintf("row %d: %s", e.Row, e.Reason)
	}
	return fmt.Sprintf("row %d: %s: %s", e.Row, e.Column, e.Reason)
}

// target is one event field filled from a column or a constant.
type target struct {
	field   string
	path    []string // field split at its dots
	col     int      // index in the row; -1 for a constant
	column  string   // the column's name
	konst   string
	isConst bool
}

// plan is a mapping applied to one set of column names.
type plan struct {
	names    []string
	targets  []target
	byField  map[string]int // field -> index in targets
	typed    bool           // values are CSV text, typed by content
	format   string
	unmapped []string
}

// newPlan applies m to a header. A mapped column missing from the header
// is an error when strict (CSV, where every row has the header's columns).
func newPlan(m Mapping, names []string, strict, typed bool) (*plan, error) {
	p := &plan{names: names, byField: map[string]int{}, typed: typed, format: m.TimeFormat}
	index := make(map[string]int, len(names))
	for i, n := range names {
		index[n] = i
	}
	used := map[string]bool{}
	var missing []string
	for f, s := range m.Fields {
		t := target{field: f, path: strings.Split(f, "."), col: -1, konst: s.Constant, isConst: s.IsConst, column: s.Column}
		if !s.IsConst {
			i, ok := index[s.Column]
			if !ok {
				if strict {
					missing = append(missing, fmt.Sprintf("%s: no column %q", f, s.Column))
				}
				continue
			}
			t.col = i
			used[s.Column] = true
		}
		p.add(t)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("the mapping names columns the header lacks (%s); the header has %s", strings.Join(missing, "; "), strings.Join(names, ", "))
	}
	for i, n := range names {
		if _, mapped := p.byField[n]; mapped || used[n] {
			continue
		}
		if isField(n) {
			p.add(target{field: n, path: strings.Split(n, "."), col: i, column: n})
			continue
		}
		p.unmapped = append(p.unmapped, n)
	}
	return p, nil
}

func (p *plan) add(t target) {
	p.byField[t.field] = len(p.targets)
	p.targets = append(p.targets, t)
}

// record maps one row to its validated pulse.events record: its value and
// its key (the entity id). messageID is used when no column gives one. n
// applies event.Decode's rules and writes the record without building the
// event (one Normalizer per goroutine).
func (p *plan) record(n *event.Normalizer, vals []any, messageID string, now time.Time, lim event.Limits) ([]byte, string, *RowError) {
	ev := make(map[string]any, 8)
	for i := range p.targets {
		t := &p.targets[i]
		var v any
		if t.isConst {
			v = t.konst
		} else {
			v = vals[t.col]
		}
		if s, ok := v.(string); ok {
			if s == "" {
				continue
			}
			if !utf8.ValidString(s) {
				return nil, "", &RowError{Column: t.column, Value: s, Reason: "not valid UTF-8 text"}
			}
			if p.typed && !t.isConst && typedByContent(t.field) {
				v = typed(s)
			}
		}
		if v == nil {
			continue
		}
		if timeFields[t.field] && !t.isConst {
			tv, err := parseTime(v, p.format)
			if err != nil {
				return nil, "", &RowError{Column: t.column, Value: text(v), Reason: err.Error()}
			}
			v = tv
		}
		if err := set(ev, t.path, v); err != nil {
			return nil, "", &RowError{Column: t.column, Value: text(v), Reason: err.Error()}
		}
	}
	if _, ok := ev["type"]; !ok {
		ev["type"] = "track"
	}
	if _, ok := ev["messageId"]; !ok {
		ev["messageId"] = messageID
	}
	raw, err := json.MarshalWithOption(ev, json.UnorderedMap())
	if err != nil {
		return nil, "", &RowError{Reason: fmt.Sprintf("cannot encode the event: %v", err)}
	}
	v, out, err := n.Normalize(nil, raw, now, lim, event.Defaults{})
	if err != nil {
		return nil, "", p.fieldError(vals, err)
	}
	return v, out.EntityID, nil
}

// fieldError names the column behind the field event.Decode refused.
func (p *plan) fieldError(vals []any, err error) *RowError {
	var fe *event.FieldError
	if !errors.As(err, &fe) {
		return &RowError{Reason: err.Error()}
	}
	re := &RowError{Column: fe.Field, Reason: fe.Reason}
	if i, ok := p.byField[fe.Field]; ok {
		t := p.targets[i]
		if t.isConst {
			re.Column, re.Value = fe.Field+" (constant)", t.konst
		} else {
			re.Column, re.Value = t.column, text(vals[t.col])
		}
	} else if fe.Field != "" {
		re.Reason += " (no column maps " + fe.Field + ")"
	}
	return re
}

// set puts v at path in the nested maps of ev.
func set(ev map[string]any, path []string, v any) error {
	m := ev
	for i, k := range path[:len(path)-1] {
		next, ok := m[k]
		if !ok {
			n := map[string]any{}
			m[k] = n
			m = n
			continue
		}
		if m, ok = next.(map[string]any); !ok {
			return fmt.Errorf("%s is both a value and an object", strings.Join(path[:i+1], "."))
		}
	}
	last := path[len(path)-1]
	if _, ok := m[last].(map[string]any); ok {
		return fmt.Errorf("%s is both a value and an object", strings.Join(path, "."))
	}
	m[last] = v
	return nil
}

// text is a value as the report shows it.
func text(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// rowJSON is a row as one JSON object, column -> value: the event of its
// dead letter.
func rowJSON(names []string, vals []any) []byte {
	m := make(map[string]any, len(names))
	for i, n := range names {
		if i < len(vals) {
			m[n] = vals[i]
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		b, _ = json.Marshal(fmt.Sprint(vals))
	}
	return b
}
