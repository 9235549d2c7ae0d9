package importer

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"gopkg.in/yaml.v3"
)

// Source is where one event field comes from: a column, or a constant.
type Source struct {
	Column   string
	Constant string
	IsConst  bool
}

// Mapping says where event fields come from. Columns named as an event's
// own fields (userId, event, properties.revenue, ...) map themselves; the
// mapping is for the others.
type Mapping struct {
	// Fields maps an event field path ("userId", "properties.revenue") to
	// its source.
	Fields map[string]Source
	// TimeFormat is how timestamp columns are written: "" (ISO-8601, or
	// epoch milliseconds as a JSON number), "unix" (epoch seconds),
	// "unix_ms" (epoch milliseconds) or a Go time layout
	// ("2006-01-02 15:04:05"; a time with no zone is UTC).
	TimeFormat string
}

// timeFormatKey is the mapping key of TimeFormat.
const timeFormatKey = "timestampFormat"

// topFields are the event's own top-level fields a column may fill.
var topFields = map[string]bool{
	"type": true, "event": true, "name": true, "messageId": true,
	"userId": true, "anonymousId": true, "previousId": true, "groupId": true,
	"timestamp": true, "originalTimestamp": true, "sentAt": true,
}

// objectFields are the event's objects whose keys a column may fill.
var objectFields = []string{"properties", "traits", "context", "integrations"}

// timeFields are the fields read as times.
var timeFields = map[string]bool{"timestamp": true, "originalTimestamp": true, "sentAt": true}

// isField reports whether path is an event field a column may fill.
func isField(path string) bool {
	if topFields[path] {
		return true
	}
	head, rest, ok := strings.Cut(path, ".")
	if !ok || rest == "" {
		return false
	}
	for _, o := range objectFields {
		if head == o {
			return true
		}
	}
	return false
}

// typedByContent reports whether path's values are typed by their content
// (numbers, true/false, else strings): the keys of the event's objects.
func typedByContent(path string) bool { return !topFields[path] }

func fieldHelp() string {
	names := make([]string, 0, len(topFields))
	for n := range topFields {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ") + ", or properties.NAME, traits.NAME, context.NAME, integrations.NAME"
}

// Set adds one field=column entry, as the -map flag gives it. A value in
// double or single quotes is a constant: event="Order Completed".
func (m *Mapping) Set(entry string) error {
	field, value, ok := strings.Cut(entry, "=")
	if !ok {
		return fmt.Errorf("mapping %q: want field=column, e.g. userId=customer_id", entry)
	}
	field, value = strings.TrimSpace(field), strings.TrimSpace(value)
	if n := len(value); n >= 2 && (value[0] == '"' || value[0] == '\'') && value[n-1] == value[0] {
		return m.add(field, Source{Constant: value[1 : n-1], IsConst: true})
	}
	return m.add(field, Source{Column: value})
}

// String is the -map flag's value.
func (m *Mapping) String() string {
	if m == nil {
		return ""
	}
	var parts []string
	for f, s := range m.Fields {
		if s.IsConst {
			parts = append(parts, fmt.Sprintf("%s=%q", f, s.Constant))
		} else {
			parts = append(parts, f+"="+s.Column)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func (m *Mapping) add(field string, s Source) error {
	if field == timeFormatKey {
		if s.IsConst {
			s.Column = s.Constant
		}
		m.TimeFormat = s.Column
		return checkTimeFormat(m.TimeFormat)
	}
	if !isField(field) {
		return fmt.Errorf("mapping %s: not an event field (want %s)", field, fieldHelp())
	}
	if !s.IsConst && s.Column == "" {
		return fmt.Errorf("mapping %s: the column is empty (quote a constant: %s: \"Order Completed\")", field, field)
	}
	if field == "type" && s.IsConst && !validType(s.Constant) {
		return fmt.Errorf("mapping type: %q is not a type (want track, identify, page, screen, group or alias)", s.Constant)
	}
	if m.Fields == nil {
		m.Fields = map[string]Source{}
	}
	m.Fields[field] = s
	return nil
}

func validType(s string) bool {
	switch s {
	case "track", "identify", "page", "screen", "group", "alias":
		return true
	}
	return false
}

func checkTimeFormat(f string) error {
	switch f {
	case "", "unix", "unix_ms":
		return nil
	}
	if !strings.ContainsAny(f, "0123456789") {
		return fmt.Errorf("mapping %s: %q is neither unix, unix_ms nor a Go time layout like 2006-01-02 15:04:05", timeFormatKey, f)
	}
	return nil
}

// ParseMapping reads a YAML mapping file: one `field: column` a line, a
// quoted value being a constant.
//
//	userId: customer_id
//	event: "Order Completed"
//	properties.revenue: total
//	timestamp: created_at
//	timestampFormat: "2006-01-02 15:04:05"
//
// Every problem is reported with its line.
func ParseMapping(b []byte) (Mapping, error) {
	var m Mapping
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return m, fmt.Errorf("cannot read the mapping: %w", err)
	}
	if len(doc.Content) == 0 {
		return m, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return m, fmt.Errorf("mapping line %d: want `field: column` lines, e.g. userId: customer_id", root.Line)
	}
	var errs []string
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Sprintf("mapping line %d: %s: want a column name or a quoted constant", v.Line, k.Value))
			continue
		}
		s := Source{Column: v.Value}
		if v.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 && k.Value != timeFormatKey {
			s = Source{Constant: v.Value, IsConst: true}
		}
		if err := m.add(k.Value, s); err != nil {
			errs = append(errs, fmt.Sprintf("line %d: %v", k.Line, err))
		}
	}
	if len(errs) > 0 {
		return m, fmt.Errorf("invalid mapping:\n  %s", strings.Join(errs, "\n  "))
	}
	return m, nil
}

// typed is a CSV value typed by its content: a finite number, true or
// false, else the string.
func typed(s string) any {
	switch s {
	case "true":
		return true
	case "false":
		return false
	}
	if c := s[0]; c == '-' || c == '.' || (c >= '0' && c <= '9') {
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) {
			return f
		}
	}
	return s
}

// parseTime reads a time column's value in the mapping's format. A string
// with no format is left to event.Decode (ISO-8601); a JSON number with no
// format is epoch milliseconds, as Decode reads it.
func parseTime(v any, format string) (any, error) {
	switch format {
	case "":
		return v, nil
	case "unix", "unix_ms":
		var f float64
		switch x := v.(type) {
		case float64:
			f = x
		case json.Number:
			var err error
			if f, err = x.Float64(); err != nil {
				return nil, fmt.Errorf("%q is not a number of %s", x, unitName(format))
			}
		case string:
			var err error
			if f, err = strconv.ParseFloat(strings.TrimSpace(x), 64); err != nil {
				return nil, fmt.Errorf("%q is not a number of %s", x, unitName(format))
			}
		default:
			return nil, fmt.Errorf("want a number of %s", unitName(format))
		}
		if format == "unix" {
			f *= 1000
		}
		if math.IsNaN(f) || math.Abs(f) > 1e15 {
			return nil, fmt.Errorf("%v is out of range", v)
		}
		return time.UnixMilli(int64(f)).UTC().Format(time.RFC3339Nano), nil
	}
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("want a time like %s", format)
	}
	t, err := time.Parse(format, s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a time like %s", s, format)
	}
	return t.UTC().Format(time.RFC3339Nano), nil
}

func unitName(format string) string {
	if format == "unix" {
		return "seconds since 1970"
	}
	return "milliseconds since 1970"
}

// Over is m with the entries of over replacing its own: the -map flags
// over a mapping file.
func (m Mapping) Over(over Mapping) Mapping {
	out := Mapping{Fields: make(map[string]Source, len(m.Fields)+len(over.Fields)), TimeFormat: m.TimeFormat}
	for f, s := range m.Fields {
		out.Fields[f] = s
	}
	for f, s := range over.Fields {
		out.Fields[f] = s
	}
	if over.TimeFormat != "" {
		out.TimeFormat = over.TimeFormat
	}
	return out
}
