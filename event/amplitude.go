package event

import (
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"github.com/google/uuid"
)

// Amplitude's HTTP V2 API (POST /2/httpapi) and Batch Event Upload API
// (POST /batch) share one body: {"api_key": "...", "events": [...]}. This
// file maps it to Events. Every error names the field as Amplitude's
// clients send it (event_type, user_id, event_properties.price...).

// AmplitudeBatch is a decoded upload body: each event's raw JSON, mapped one
// by one with AmplitudeEvent so one bad event does not hide the others.
type AmplitudeBatch struct {
	APIKey string
	Events []json.RawMessage
}

type wireAmplitudeBatch struct {
	APIKey any                `json:"api_key"`
	Events *[]json.RawMessage `json:"events"`
}

// DecodeAmplitude reads an upload body. Errors concern the whole request:
// a *FieldError whose Reason starts with "required" names a missing field
// (Amplitude's missing_field), a *LimitError a batch over the event limit.
func DecodeAmplitude(body []byte, lim Limits) (*AmplitudeBatch, error) {
	var w wireAmplitudeBatch
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fieldErr("", "invalid JSON: %s", jsonReason(err))
	}
	if w.Events == nil {
		return nil, fieldErr("events", "required: a list of events")
	}
	b := &AmplitudeBatch{Events: *w.Events}
	if lim.MaxBatchEvents > 0 && len(b.Events) > lim.MaxBatchEvents {
		return nil, &LimitError{fieldErr("events", "has %d events, over the %d event limit", len(b.Events), lim.MaxBatchEvents)}
	}
	var err error
	if b.APIKey, err = optString("api_key", w.APIKey, false); err != nil {
		return nil, err
	}
	return b, nil
}

// wireAmplitude is one Amplitude event. Fields Pulse has no place for are
// kept under context.amplitude (see amplitudeExtra).
type wireAmplitude struct {
	EventType       any             `json:"event_type"`
	UserID          json.RawMessage `json:"user_id"`
	DeviceID        json.RawMessage `json:"device_id"`
	Time            any             `json:"time"`
	InsertID        any             `json:"insert_id"`
	EventProperties any             `json:"event_properties"`
	UserProperties  any             `json:"user_properties"`
	Library         any             `json:"library"`
	IP              any             `json:"ip"`
	UserAgent       any             `json:"user_agent"`
	OSName          any             `json:"os_name"`
	OSVersion       any             `json:"os_version"`
	DeviceBrand     any             `json:"device_brand"`
	DeviceModel     any             `json:"device_model"`
	DeviceMaker     any             `json:"device_manufacturer"`
	AppVersion      any             `json:"app_version"`
	Carrier         any             `json:"carrier"`
	Country         any             `json:"country"`
	Region          any             `json:"region"`
	City            any             `json:"city"`
	Language        any             `json:"language"`
	Lat             any             `json:"location_lat"`
	Lng             any             `json:"location_lng"`
	Revenue         any             `json:"revenue"`
	Price           any             `json:"price"`
	Quantity        any             `json:"quantity"`
	ProductID       any             `json:"productId"`
	RevenueType     any             `json:"revenueType"`
	// The fields with no Segment counterpart, kept as sent under
	// context.amplitude (in amplitudeExtra's order).
	Platform        any `json:"platform"`
	SessionID       any `json:"session_id"`
	EventID         any `json:"event_id"`
	Groups          any `json:"groups"`
	GroupProperties any `json:"group_properties"`
	IDFA            any `json:"idfa"`
	IDFV            any `json:"idfv"`
	ADID            any `json:"adid"`
	AndroidID       any `json:"android_id"`
	DMA             any `json:"dma"`
	Plan            any `json:"plan"`
	Ingestion       any `json:"ingestion_metadata"`
	PartnerID       any `json:"partner_id"`
	VersionName     any `json:"version_name"`
	AppSetID        any `json:"android_app_set_id"`
}

func (w *wireAmplitude) extra() [15]any {
	return [...]any{w.Platform, w.SessionID, w.EventID, w.Groups, w.GroupProperties, w.IDFA, w.IDFV, w.ADID,
		w.AndroidID, w.DMA, w.Plan, w.Ingestion, w.PartnerID, w.VersionName, w.AppSetID}
}

// amplitudeExtra are the Amplitude fields copied as sent to
// context.amplitude: they have no Segment counterpart.
var amplitudeExtra = []string{"platform", "session_id", "event_id", "groups", "group_properties",
	"idfa", "idfv", "adid", "android_id", "dma", "plan", "ingestion_metadata", "partner_id",
	"version_name", "android_app_set_id"}

// AmplitudeEvent validates and maps one Amplitude event to an Event:
//
//   - event_type "$identify" is an identify; any other is a track named
//     event_type (a "$groupidentify" too, kept under its own name);
//   - user_id is userId, device_id anonymousId (one is required);
//   - time (epoch ms) is the timestamp, insert_id the messageId;
//   - event_properties are the properties; revenue, price, quantity,
//     productId and revenueType join them (as revenue, price, quantity,
//     product_id and revenue_type) unless they are already there;
//   - user_properties: $set and then $setOnce (where $set has no value) and
//     plain members are the traits of an identify, context.traits of a
//     track; other operations ($add, $unset...) stay in
//     context.amplitude.user_properties;
//   - library, ip, user_agent, os_*, device_*, app_version, carrier,
//     country, region, city, language, location_* go to their Segment
//     context fields; platform, session_id and the rest to
//     context.amplitude.
func AmplitudeEvent(raw []byte, now time.Time, lim Limits) (*Event, error) {
	if lim.MaxEventBytes > 0 && len(raw) > lim.MaxEventBytes {
		return nil, fieldErr("", "event is %d bytes, over the %d byte limit", len(raw), lim.MaxEventBytes)
	}
	var w wireAmplitude
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fieldErr("", "invalid JSON: %s", jsonReason(err))
	}
	if path, bad := badTextField(raw, ""); bad {
		return nil, fieldErr(path, textReason)
	}
	e := &Event{ReceivedAt: now.UTC()}
	name, err := optString("event_type", w.EventType, false)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fieldErr("event_type", "required")
	}
	if e.UserID, err = optID("user_id", w.UserID); err != nil {
		return nil, err
	}
	if e.AnonymousID, err = optID("device_id", w.DeviceID); err != nil {
		return nil, err
	}
	if e.UserID == "" && e.AnonymousID == "" {
		return nil, fieldErr("user_id", "required: user_id or device_id")
	}
	if e.MessageID, err = optString("insert_id", w.InsertID, false); err != nil {
		return nil, err
	}
	if len(e.MessageID) > MaxMessageIDLen {
		return nil, fieldErr("insert_id", "is %d characters, over the %d limit", len(e.MessageID), MaxMessageIDLen)
	}
	if e.MessageID == "" {
		e.MessageID = uuid.NewString()
	}
	if e.Properties, err = optObject("event_properties", w.EventProperties); err != nil {
		return nil, err
	}
	userProps, err := optObject("user_properties", w.UserProperties)
	if err != nil {
		return nil, err
	}
	traits, ops, err := amplitudeTraits(userProps)
	if err != nil {
		return nil, err
	}
	for _, p := range [...]struct {
		field, prop string
		v           any
	}{{"revenue", "revenue", w.Revenue}, {"price", "price", w.Price}, {"quantity", "quantity", w.Quantity},
		{"productId", "product_id", w.ProductID}, {"revenueType", "revenue_type", w.RevenueType}} {
		if p.v == nil {
			continue
		}
		if e.Properties == nil {
			e.Properties = map[string]any{}
		}
		if _, ok := e.Properties[p.prop]; !ok {
			e.Properties[p.prop] = p.v
		}
	}
	if e.Context, err = amplitudeContext(&w); err != nil {
		return nil, err
	}
	if len(ops) > 0 {
		amp, _ := e.Context["amplitude"].(map[string]any)
		if amp == nil {
			amp = map[string]any{}
			e.Context = setMember(e.Context, "amplitude", amp)
		}
		amp["user_properties"] = ops
	}
	if name == "$identify" {
		e.Type = Identify
		e.Traits = traits
	} else {
		e.Type = Track
		e.Event = name
		if len(traits) > 0 {
			e.Context = setMember(e.Context, "traits", traits)
		}
	}
	ts, err := amplitudeTime(w.Time)
	if err != nil {
		return nil, err
	}
	if err := e.setTimes(ts, time.Time{}, time.Time{}, time.Time{}); err != nil {
		return nil, renameField(err, "timestamp", "time")
	}
	return e, nil
}

// amplitudeTraits splits user_properties into the traits ($set, then
// $setOnce where $set has no value, and members that are not operations)
// and the other operations, kept as sent.
func amplitudeTraits(up map[string]any) (traits, ops map[string]any, err error) {
	if len(up) == 0 {
		return nil, nil, nil
	}
	traits = map[string]any{}
	var once map[string]any
	for k, v := range up {
		switch {
		case k == "$set":
			m, err := optObject("user_properties.$set", v)
			if err != nil {
				return nil, nil, err
			}
			for tk, tv := range m {
				traits[tk] = tv
			}
		case k == "$setOnce":
			if once, err = optObject("user_properties.$setOnce", v); err != nil {
				return nil, nil, err
			}
		case strings.HasPrefix(k, "$"):
			if ops == nil {
				ops = map[string]any{}
			}
			ops[k] = v
		default:
			traits[k] = v
		}
	}
	for k, v := range once {
		if _, ok := traits[k]; !ok {
			traits[k] = v
		}
	}
	if len(traits) == 0 {
		traits = nil
	}
	return traits, ops, nil
}

// amplitudeTime reads time: epoch milliseconds.
func amplitudeTime(v any) (time.Time, error) {
	switch x := v.(type) {
	case nil:
		return time.Time{}, nil
	case float64:
		return time.UnixMilli(int64(x)).UTC(), nil
	}
	return time.Time{}, fieldErr("time", "must be a number: milliseconds since the epoch")
}

// amplitudeContext builds the Segment context of an Amplitude event.
func amplitudeContext(w *wireAmplitude) (map[string]any, error) {
	ctx := map[string]any{}
	str := func(field string, v any) (string, error) { return optString(field, v, false) }
	lib, err := str("library", w.Library)
	if err != nil {
		return nil, err
	}
	if lib != "" {
		// "amplitude-node-ts/1.5.73": the name, then the version.
		name, version, _ := strings.Cut(lib, "/")
		l := map[string]any{"name": name}
		if version != "" {
			l["version"] = version
		}
		ctx["library"] = l
	}
	for _, f := range [...]struct {
		field, path string
		v           any
	}{
		{"ip", "ip", w.IP}, {"user_agent", "userAgent", w.UserAgent}, {"language", "locale", w.Language},
		{"os_name", "os.name", w.OSName}, {"os_version", "os.version", w.OSVersion},
		{"device_brand", "device.brand", w.DeviceBrand}, {"device_model", "device.model", w.DeviceModel},
		{"device_manufacturer", "device.manufacturer", w.DeviceMaker}, {"app_version", "app.version", w.AppVersion},
		{"carrier", "network.carrier", w.Carrier}, {"country", "location.country", w.Country},
		{"region", "location.region", w.Region}, {"city", "location.city", w.City},
	} {
		s, err := str(f.field, f.v)
		if err != nil {
			return nil, err
		}
		if s != "" {
			setPath(ctx, f.path, s)
		}
	}
	for _, f := range [...]struct {
		field, path string
		v           any
	}{{"location_lat", "location.latitude", w.Lat}, {"location_lng", "location.longitude", w.Lng}} {
		switch x := f.v.(type) {
		case nil:
		case float64:
			setPath(ctx, f.path, x)
		default:
			return nil, fieldErr(f.field, "must be a number")
		}
	}
	var extra map[string]any
	for i, v := range w.extra() {
		if v != nil {
			if extra == nil {
				extra = map[string]any{}
			}
			extra[amplitudeExtra[i]] = v
		}
	}
	if len(extra) > 0 {
		ctx["amplitude"] = extra
	}
	if len(ctx) == 0 {
		return nil, nil
	}
	return ctx, nil
}

// setPath sets a dotted path in m, making the maps on the way.
func setPath(m map[string]any, path string, v any) {
	for {
		head, rest, more := strings.Cut(path, ".")
		if !more {
			m[head] = v
			return
		}
		next, ok := m[head].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[head] = next
		}
		m, path = next, rest
	}
}

// setMember sets m[k] = v, making m when it is nil.
func setMember(m map[string]any, k string, v any) map[string]any {
	if m == nil {
		m = map[string]any{}
	}
	m[k] = v
	return m
}

// renameField gives a *FieldError about from the client's name to.
func renameField(err error, from, to string) error {
	if fe, ok := err.(*FieldError); ok && fe.Field == from {
		return &FieldError{Field: to, Reason: fe.Reason}
	}
	return err
}
