package event

import (
	"time"

	json "github.com/goccy/go-json"
	"github.com/google/uuid"
)

// PostHog's capture API (/capture, /batch, /e, /i/v0/e) takes one event,
// {"api_key": ..., "batch": [...]}, or a list of events. This file maps
// them to Events; every error names the field as PostHog's clients send it
// (distinct_id, properties.$set...).

// PostHogBatch is a decoded capture body: each event's raw JSON, mapped one
// by one with PostHogEvent, and the batch's sent_at.
type PostHogBatch struct {
	APIKey string
	Items  []json.RawMessage
	SentAt time.Time
	// Single: the body was one event, not a batch or a list.
	Single bool
}

type wirePostHogBatch struct {
	APIKey any                `json:"api_key"`
	Token  any                `json:"token"`
	Batch  *[]json.RawMessage `json:"batch"`
	SentAt any                `json:"sent_at"`
}

// DecodePostHog reads a capture body. Errors concern the whole request.
func DecodePostHog(body []byte, lim Limits) (*PostHogBatch, error) {
	b := &PostHogBatch{}
	first := firstByte(body)
	switch first {
	case '[':
		if err := json.Unmarshal(body, &b.Items); err != nil {
			return nil, fieldErr("", "invalid JSON: %s", jsonReason(err))
		}
	case '{':
		var w wirePostHogBatch
		if err := json.Unmarshal(body, &w); err != nil {
			return nil, fieldErr("", "invalid JSON: %s", jsonReason(err))
		}
		var err error
		if b.APIKey, err = optString("api_key", w.APIKey, false); err != nil {
			return nil, err
		}
		if b.APIKey == "" {
			if b.APIKey, err = optString("token", w.Token, false); err != nil {
				return nil, err
			}
		}
		if w.Batch == nil {
			b.Items, b.Single = []json.RawMessage{body}, true
			return b, nil
		}
		b.Items = *w.Batch
		if b.SentAt, err = optTime("sent_at", w.SentAt); err != nil {
			return nil, err
		}
	default:
		return nil, fieldErr("", "invalid JSON: want an event, {\"api_key\": ..., \"batch\": [...]} or a list of events")
	}
	if lim.MaxBatchEvents > 0 && len(b.Items) > lim.MaxBatchEvents {
		return nil, &LimitError{fieldErr("batch", "has %d events, over the %d event limit", len(b.Items), lim.MaxBatchEvents)}
	}
	return b, nil
}

func firstByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

type wirePostHog struct {
	Event      any             `json:"event"`
	DistinctID json.RawMessage `json:"distinct_id"`
	Properties any             `json:"properties"`
	Timestamp  any             `json:"timestamp"`
	Offset     any             `json:"offset"`
	UUID       any             `json:"uuid"`
	Set        any             `json:"$set"`
	SetOnce    any             `json:"$set_once"`
}

// PostHogEvent validates and maps one PostHog event to an Event. sentAt is
// the batch's sent_at (zero when none):
//
//   - "$identify" and "$set" are identifies: distinct_id is the userId,
//     properties.$anon_distinct_id the anonymousId; "$create_alias" is an
//     alias (properties.alias the previousId); "$groupidentify" a group
//     ($group_key the groupId, $group_set the traits); "$pageview" a page
//     and "$screen" a screen ($screen_name the name); any other event a
//     track of that name, distinct_id its userId;
//   - $set, then $set_once where $set has no value (in properties or at the
//     event's top level) are the traits of an identify, context.traits of
//     any other type;
//   - timestamp is the event's time, corrected for the client's clock with
//     sent_at as PostHog does (unless properties.$ignore_sent_at); offset
//     (ms before sending) stands in for a missing timestamp;
//   - uuid is the messageId; $lib and $lib_version are context.library,
//     $ip context.ip; the properties are kept as sent otherwise.
func PostHogEvent(raw []byte, now time.Time, lim Limits, sentAt time.Time) (*Event, error) {
	if lim.MaxEventBytes > 0 && len(raw) > lim.MaxEventBytes {
		return nil, fieldErr("", "event is %d bytes, over the %d byte limit", len(raw), lim.MaxEventBytes)
	}
	var w wirePostHog
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fieldErr("", "invalid JSON: %s", jsonReason(err))
	}
	if path, bad := badTextField(raw, ""); bad {
		return nil, fieldErr(path, textReason)
	}
	e := &Event{ReceivedAt: now.UTC()}
	name, err := optString("event", w.Event, false)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fieldErr("event", "required")
	}
	props, err := optObject("properties", w.Properties)
	if err != nil {
		return nil, err
	}
	distinct, err := optID("distinct_id", w.DistinctID)
	if err != nil {
		return nil, err
	}
	if distinct == "" {
		// posthog-js puts it in the properties.
		if distinct, err = propID(props, "distinct_id"); err != nil {
			return nil, err
		}
	}
	if distinct == "" {
		return nil, fieldErr("distinct_id", "required")
	}
	e.UserID = distinct
	if e.MessageID, err = optString("uuid", w.UUID, false); err != nil {
		return nil, err
	}
	if len(e.MessageID) > MaxMessageIDLen {
		return nil, fieldErr("uuid", "is %d characters, over the %d limit", len(e.MessageID), MaxMessageIDLen)
	}
	if e.MessageID == "" {
		e.MessageID = uuid.NewString()
	}

	// Traits: $set wins over $set_once; the properties' over the top level's.
	traits := map[string]any{}
	for _, s := range [...]struct {
		field string
		v     any
	}{{"$set_once", w.SetOnce}, {"properties.$set_once", props["$set_once"]}, {"$set", w.Set}, {"properties.$set", props["$set"]}} {
		m, err := optObject(s.field, s.v)
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			traits[k] = v
		}
	}
	if len(traits) == 0 {
		traits = nil
	}
	ctx := map[string]any{}
	if lib, ok := props["$lib"].(string); ok && lib != "" {
		l := map[string]any{"name": lib}
		if v, ok := props["$lib_version"].(string); ok && v != "" {
			l["version"] = v
		}
		ctx["library"] = l
	}
	if ip, ok := props["$ip"].(string); ok && ip != "" {
		ctx["ip"] = ip
	}

	switch name {
	case "$identify", "$set":
		e.Type = Identify
		e.Traits = traits
		if e.AnonymousID, err = propID(props, "$anon_distinct_id"); err != nil {
			return nil, err
		}
		props = without(props, "$set", "$set_once", "$anon_distinct_id")
	case "$create_alias":
		e.Type = Alias
		if e.PreviousID, err = propID(props, "alias"); err != nil {
			return nil, err
		}
		if e.PreviousID == "" {
			return nil, fieldErr("properties.alias", "required for $create_alias")
		}
	case "$groupidentify":
		e.Type = Group
		if e.GroupID, err = propID(props, "$group_key"); err != nil {
			return nil, err
		}
		if e.GroupID == "" {
			return nil, fieldErr("properties.$group_key", "required for $groupidentify")
		}
		if e.Traits, err = optObject("properties.$group_set", props["$group_set"]); err != nil {
			return nil, err
		}
	case "$pageview":
		e.Type = Page
		if t, ok := props["title"].(string); ok {
			e.Name = t
		}
	case "$screen":
		e.Type = Screen
		if e.Name, err = optString("properties.$screen_name", props["$screen_name"], false); err != nil {
			return nil, err
		}
	default:
		e.Type = Track
		e.Event = name
	}
	if e.Type != Identify && traits != nil {
		ctx["traits"] = traits
	}
	if len(props) > 0 {
		e.Properties = props
	}
	if len(ctx) > 0 {
		e.Context = ctx
	}

	ts, err := optTime("timestamp", w.Timestamp)
	if err != nil {
		return nil, err
	}
	if ts.IsZero() && w.Offset != nil {
		off, ok := w.Offset.(float64)
		if !ok {
			return nil, fieldErr("offset", "must be a number of milliseconds")
		}
		base := sentAt
		if base.IsZero() {
			base = e.ReceivedAt
		}
		ts = base.Add(-time.Duration(off) * time.Millisecond)
		sentAt = base
	}
	if ignore, _ := props["$ignore_sent_at"].(bool); ignore {
		sentAt = time.Time{}
	}
	// PostHog's skew correction is Segment's: timestamp is the client's
	// originalTimestamp, corrected by how far its sent_at is from now.
	if !ts.IsZero() && !sentAt.IsZero() {
		err = e.setTimes(time.Time{}, ts, sentAt, time.Time{})
	} else {
		err = e.setTimes(ts, time.Time{}, time.Time{}, time.Time{})
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

// propID reads an id from the properties, naming it properties.NAME.
func propID(props map[string]any, name string) (string, error) {
	switch x := props[name].(type) {
	case nil:
		return "", nil
	case string:
		return x, checkIDLen("properties."+name, len(x))
	case float64:
		b, _ := json.Marshal(x)
		if id, ok := NumberID(b); ok {
			return id, nil
		}
	}
	return "", fieldErr("properties."+name, "must be a string or a number")
}

// without is m less the keys, copied only when it holds one.
func without(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		if _, ok := m[k]; ok {
			out := make(map[string]any, len(m))
			for mk, v := range m {
				out[mk] = v
			}
			for _, k := range keys {
				delete(out, k)
			}
			return out
		}
	}
	return m
}
