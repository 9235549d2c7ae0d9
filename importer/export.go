package importer

import (
	"errors"
	"fmt"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/event"
)

// The formats of Options.Format. Segment's exports (its S3 and warehouse
// archives) are JSON lines of Segment events: the mapping path reads them
// as they are, their fields mapping themselves.
const (
	FormatAuto      = ""          // by content
	FormatSegment   = "segment"   // JSON lines or CSV read through the mapping
	FormatAmplitude = "amplitude" // Amplitude's Export API events
	FormatPostHog   = "posthog"   // PostHog's event exports (batch exports, the events table)
)

// CheckFormat validates a -format value.
func CheckFormat(f string) error {
	switch f {
	case FormatAuto, FormatSegment, FormatAmplitude, FormatPostHog:
		return nil
	}
	return fmt.Errorf("format %q: want segment, amplitude or posthog (or none: by content)", f)
}

// export maps one row of a vendor's export, as the object it is, to an
// event; id is the messageId to use when the row carries none.
type export func(obj map[string]any, id string, now time.Time, lim event.Limits) (*event.Event, *RowError)

// exportOf is the reader of a JSON file's rows in format; with no format,
// guessed from the first row's columns when there is no mapping: Amplitude
// exports have event_type, PostHog's distinct_id. Nil: the mapping path.
func exportOf(format string, m Mapping, first []string) export {
	if format == FormatAuto && len(m.Fields) == 0 {
		for _, n := range first {
			switch n {
			case "event_type":
				format = FormatAmplitude
			case "distinct_id":
				format = FormatPostHog
			}
		}
	}
	switch format {
	case FormatAmplitude:
		return amplitudeExport
	case FormatPostHog:
		return postHogExport
	}
	return nil
}

// amplitudeLayout is how Amplitude's exports write times (UTC).
const amplitudeLayout = "2006-01-02 15:04:05.999999"

// amplitudeExport reads one event of Amplitude's Export API: its fields
// are those of the HTTP API but for event_time (a UTC date-time, else
// client_event_time; time in ms is read too) and $insert_id (else uuid,
// Amplitude's own id of the event) for insert_id. The rest is
// event.AmplitudeEvent's mapping.
func amplitudeExport(obj map[string]any, id string, now time.Time, lim event.Limits) (*event.Event, *RowError) {
	in := make(map[string]any, len(obj)+2)
	for k, v := range obj {
		in[k] = v
	}
	if in["time"] == nil {
		for _, f := range []string{"event_time", "client_event_time"} {
			s, ok := obj[f].(string)
			if !ok || s == "" {
				continue
			}
			t, err := time.Parse(amplitudeLayout, s)
			if err != nil {
				return nil, &RowError{Column: f, Value: s, Reason: fmt.Sprintf("%q is not a time like %s", s, amplitudeLayout)}
			}
			in["time"] = float64(t.UnixMilli())
			break
		}
	}
	if in["insert_id"] == nil {
		in["insert_id"] = firstString(obj, id, "$insert_id", "uuid")
	}
	raw, err := json.Marshal(in)
	if err != nil {
		return nil, &RowError{Reason: fmt.Sprintf("cannot encode the event: %v", err)}
	}
	e, err := event.AmplitudeEvent(raw, now, lim)
	if err != nil {
		return nil, objError(obj, err)
	}
	return e, nil
}

// postHogExport reads one event of PostHog's exports (batch exports to a
// file, the events table): uuid, event, distinct_id, properties, timestamp
// and set/set_once ($set/$set_once at the top level). The rest is
// event.PostHogEvent's mapping; the time is the row's timestamp, with no
// skew correction.
func postHogExport(obj map[string]any, id string, now time.Time, lim event.Limits) (*event.Event, *RowError) {
	in := make(map[string]any, len(obj)+1)
	for k, v := range obj {
		in[k] = v
	}
	for from, to := range map[string]string{"set": "$set", "set_once": "$set_once"} {
		if v, ok := obj[from]; ok && in[to] == nil {
			in[to] = v
		}
	}
	if s, _ := obj["properties"].(string); s != "" {
		// The events table exports properties as JSON text.
		var props map[string]any
		if err := json.Unmarshal([]byte(s), &props); err != nil {
			return nil, &RowError{Column: "properties", Value: clip(s), Reason: "not a JSON object"}
		}
		in["properties"] = props
	}
	if in["uuid"] == nil || in["uuid"] == "" {
		in["uuid"] = id
	}
	raw, err := json.Marshal(in)
	if err != nil {
		return nil, &RowError{Reason: fmt.Sprintf("cannot encode the event: %v", err)}
	}
	e, err := event.PostHogEvent(raw, now, lim, time.Time{})
	if err != nil {
		return nil, objError(obj, err)
	}
	return e, nil
}

// firstString is the first of obj's fields that is a non-empty string,
// else def.
func firstString(obj map[string]any, def string, fields ...string) string {
	for _, f := range fields {
		if s, ok := obj[f].(string); ok && s != "" {
			return s
		}
	}
	return def
}

// objError is the row error of a decode error: the field at fault and its
// value in the row.
func objError(obj map[string]any, err error) *RowError {
	var fe *event.FieldError
	if !errors.As(err, &fe) {
		return &RowError{Reason: err.Error()}
	}
	re := &RowError{Column: fe.Field, Reason: fe.Reason}
	if v, ok := lookup(obj, fe.Field); ok {
		re.Value = clip(text(v))
	}
	return re
}

// lookup finds a dotted path in nested objects: a key may hold dots
// itself, so the longest key first.
func lookup(obj map[string]any, path string) (any, bool) {
	if v, ok := obj[path]; ok {
		return v, true
	}
	for i := len(path) - 1; i > 0; i-- {
		if path[i] != '.' {
			continue
		}
		if sub, ok := obj[path[:i]].(map[string]any); ok {
			return lookup(sub, path[i+1:])
		}
	}
	return nil, false
}
