package event

import (
	"bytes"
	"testing"

	json "github.com/goccy/go-json"
)

// UnmarshalRaw accepts and refuses exactly what Unmarshal does, with the
// same errors and the same fields, maps raw.
func TestUnmarshalRawAgrees(t *testing.T) {
	f := func(in string) {
		t.Helper()
		e, err := Unmarshal([]byte(in))
		r, rerr := UnmarshalRaw([]byte(in))
		if (err == nil) != (rerr == nil) || (err != nil && err.Error() != rerr.Error()) {
			t.Fatalf("%s: Unmarshal %v, UnmarshalRaw %v", in, err, rerr)
		}
		if err != nil {
			return
		}
		if r.Type != e.Type || r.MessageID != e.MessageID || r.UserID != e.UserID || r.AnonymousID != e.AnonymousID ||
			r.PreviousID != e.PreviousID || r.GroupID != e.GroupID || r.Event != e.Event || r.Name != e.Name ||
			!r.Timestamp.Equal(e.Timestamp) || !r.OriginalTimestamp.Equal(e.OriginalTimestamp) ||
			!r.SentAt.Equal(e.SentAt) || !r.ReceivedAt.Equal(e.ReceivedAt) || r.FeatureSet != e.FeatureSet ||
			r.EntityID() != e.EntityID() {
			t.Fatalf("%s: UnmarshalRaw %+v, Unmarshal %+v", in, r, e)
		}
		for _, m := range []struct {
			raw json.RawMessage
			obj map[string]any
		}{{r.Properties, e.Properties}, {r.Traits, e.Traits}, {r.Context, e.Context}, {r.Integrations, e.Integrations}} {
			var got map[string]any
			if len(m.raw) > 0 && !bytes.Equal(m.raw, []byte("null")) {
				if err := json.Unmarshal(m.raw, &got); err != nil {
					t.Fatalf("%s: raw map %s: %v", in, m.raw, err)
				}
			}
			a, _ := json.Marshal(got)
			b, _ := json.Marshal(m.obj)
			if !bytes.Equal(a, b) {
				t.Fatalf("%s: raw map %s, want %s", in, a, b)
			}
		}
	}
	const ts = `"timestamp":"2026-12-04T10:00:00Z"`
	f(`{"type":"track","userId":"u","event":"Order Completed","properties":{"revenue":12.5},` + ts + `}`)
	f(`{"type":"identify","anonymousId":"a","traits":{"email":"x@y"},"context":null,"receivedAt":"2026-12-04T10:00:00Z"}`)
	f(`{"type":"page","userId":"u","name":"Home","messageId":"m","featureSet":"fs",` + ts + `,"sentAt":"2026-12-04T10:00:01Z","originalTimestamp":"2026-12-04T09:59:59Z"}`)
	f(`{"type":"track","userId":"u","event":"e","properties":[1],` + ts + `}`) // not an object
	f(`{"type":"track","userId":"u","event":"e","properties":"x",` + ts + `}`) // not an object
	f(`{"type":"track","userId":"u",` + ts + `}`)                              // no event name
	f(`{"type":"bogus","userId":"u",` + ts + `}`)                              // unknown type
	f(`{"type":"track","event":"e",` + ts + `}`)                               // no id
	f(`{"type":"track","userId":"u","event":"e"}`)                             // no time
	f(`{"type":"track","userId":1,"event":"e",` + ts + `}`)                    // id of the wrong type
	f(`{"type":"track","userId":"u","event":"e","timestamp":"yesterday"}`)     // bad time
	f(`not json`)
	f(`{"type":"alias","userId":"u","previousId":"p","groupId":"g",` + ts + `}`)
}
