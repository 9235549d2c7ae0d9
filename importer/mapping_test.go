package importer

import (
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/event"
)

var testNow = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func TestParseMapping(t *testing.T) {
	f := func(yml, want, wantErr string) {
		t.Helper()
		m, err := ParseMapping([]byte(yml))
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("ParseMapping(%q) error = %v, want it to contain %q", yml, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("ParseMapping(%q): %v", yml, err)
		}
		if got := m.String() + " fmt=" + m.TimeFormat; got != want {
			t.Fatalf("ParseMapping(%q) = %s, want %s", yml, got, want)
		}
	}
	f("userId: customer_id\nevent: \"Order Completed\"\nproperties.revenue: total\n", `event="Order Completed" properties.revenue=total userId=customer_id fmt=`, "")
	f("event: 'Signed Up'\ntimestamp: created_at\ntimestampFormat: unix_ms\n", `event="Signed Up" timestamp=created_at fmt=unix_ms`, "")
	f("timestampFormat: \"2006-01-02 15:04\"\n", ` fmt=2006-01-02 15:04`, "")
	f("", ` fmt=`, "")
	f("revenue: total\n", "", "line 1: mapping revenue: not an event field")
	f("userId: id\nproperties.: x\n", "", "line 2: mapping properties.: not an event field")
	f("type: \"buy\"\n", "", `"buy" is not a type`)
	f("timestampFormat: seconds\n", "", "neither unix, unix_ms nor a Go time layout")
	f("- userId\n", "", "want `field: column` lines")
	f("userId: [a, b]\n", "", "line 1: userId: want a column name or a quoted constant")
	f("userId: \"\"\nevent: ''\n", `event="" userId="" fmt=`, "")
	f("userId:\n", "", "the column is empty")
}

func TestMappingSet(t *testing.T) {
	f := func(entry, want, wantErr string) {
		t.Helper()
		var m Mapping
		err := m.Set(entry)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("Set(%q) error = %v, want %q", entry, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("Set(%q): %v", entry, err)
		}
		if got := m.String(); got != want {
			t.Fatalf("Set(%q) = %s, want %s", entry, got, want)
		}
	}
	f("userId=customer_id", "userId=customer_id", "")
	f(`event="Order Completed"`, `event="Order Completed"`, "")
	f(`event='a=b'`, `event="a=b"`, "")
	f("traits.email = email ", "traits.email=email", "")
	f("userId", "", "want field=column")
	f("total=revenue", "", "not an event field")
}

func TestTyped(t *testing.T) {
	f := func(in string, want any) {
		t.Helper()
		if got := typed(in); got != want {
			t.Fatalf("typed(%q) = %#v, want %#v", in, got, want)
		}
	}
	f("42", 42.0)
	f("-1.5", -1.5)
	f(".5", 0.5)
	f("1e3", 1000.0)
	f("true", true)
	f("false", false)
	f("True", "True")
	f("0012", 12.0)
	f("1e999", "1e999")
	f("NaN", "NaN")
	f("12 apples", "12 apples")
	f("a@b.c", "a@b.c")
}

func TestParseTime(t *testing.T) {
	f := func(v any, format string, want, wantErr string) {
		t.Helper()
		got, err := parseTime(v, format)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("parseTime(%v, %q) error = %v, want %q", v, format, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("parseTime(%v, %q): %v", v, format, err)
		}
		if got != want {
			t.Fatalf("parseTime(%v, %q) = %v, want %v", v, format, got, want)
		}
	}
	f("2026-01-02T03:04:05Z", "", "2026-01-02T03:04:05Z", "")
	f("1767323045", "unix", "2026-01-02T03:04:05Z", "")
	f("1767323045.5", "unix", "2026-01-02T03:04:05.5Z", "")
	f("1767323045123", "unix_ms", "2026-01-02T03:04:05.123Z", "")
	f(1767323045123.0, "unix_ms", "2026-01-02T03:04:05.123Z", "")
	f("02/01/2026 03:04", "02/01/2006 15:04", "2026-01-02T03:04:00Z", "")
	f("yesterday", "unix", "", `"yesterday" is not a number of seconds since 1970`)
	f("2026-01-02", "02/01/2006 15:04", "", `"2026-01-02" is not a time like 02/01/2006 15:04`)
	f("1e300", "unix", "", "out of range")
}

// TestPlanEvent maps CSV rows (header, values) to events through the
// mapping and event.Decode, or to the refusal naming the column.
func TestPlanEvent(t *testing.T) {
	f := func(mapping string, header, row []string, want, wantErr string) {
		t.Helper()
		m, err := ParseMapping([]byte(mapping))
		if err != nil {
			t.Fatal(err)
		}
		p, err := newPlan(m, header, true, true)
		if err != nil {
			if wantErr != "" && strings.Contains(err.Error(), wantErr) {
				return
			}
			t.Fatalf("newPlan: %v", err)
		}
		vals := make([]any, len(row))
		for i, s := range row {
			vals[i] = s
		}
		var n event.Normalizer
		v, key, re := p.record(&n, vals, "import-x-1", testNow, event.DefaultLimits)
		if wantErr != "" {
			if re == nil {
				t.Fatalf("row %v: no error, want %q", row, wantErr)
			}
			if got := re.Column + " | " + re.Value + " | " + re.Reason; !strings.Contains(got, wantErr) {
				t.Fatalf("row %v: error %q, want it to contain %q", row, got, wantErr)
			}
			return
		}
		if re != nil {
			t.Fatalf("row %v: %v", row, re)
		}
		// The record, decoded and encoded again: what Decode and Marshal
		// would have made.
		e, err := event.Unmarshal(v)
		if err != nil {
			t.Fatalf("row %v: record %s: %v", row, v, err)
		}
		if key != e.EntityID() {
			t.Fatalf("row %v: key %q, want the entity %q", row, key, e.EntityID())
		}
		b, _ := e.Marshal()
		got := string(b)
		got = got[:strings.Index(got, `,"receivedAt"`)] + "}"
		if got != want {
			t.Fatalf("row %v:\n got %s\nwant %s", row, got, want)
		}
	}
	// A file in the event's own shape needs no mapping.
	f("", []string{"userId", "event", "timestamp", "properties.revenue", "traits.email", "context.ip"},
		[]string{"u1", "Order Completed", "2026-11-30T10:00:00Z", "42.5", "a@b.c", "1.2.3.4"},
		`{"type":"track","messageId":"import-x-1","userId":"u1","event":"Order Completed","properties":{"revenue":42.5},"traits":{"email":"a@b.c"},"context":{"ip":"1.2.3.4"},"timestamp":"2026-11-30T10:00:00Z","originalTimestamp":"2026-11-30T10:00:00Z"}`, "")
	// A shop's export, mapped; a constant event name; typed properties;
	// unmapped columns left out.
	orders := "userId: customer_id\nevent: \"Order Completed\"\nproperties.revenue: total\nproperties.coupon: coupon\nproperties.gift: gift\ntimestamp: created_at\ntimestampFormat: \"2006-01-02 15:04:05\"\n"
	header := []string{"order_id", "customer_id", "total", "coupon", "gift", "created_at"}
	f(orders, header, []string{"o1", "0042", "19.90", "WINTER", "true", "2026-11-30 10:00:00"},
		`{"type":"track","messageId":"import-x-1","userId":"0042","event":"Order Completed","properties":{"coupon":"WINTER","gift":true,"revenue":19.9},"timestamp":"2026-11-30T10:00:00Z","originalTimestamp":"2026-11-30T10:00:00Z"}`, "")
	// An empty cell is no value.
	f(orders, header, []string{"o1", "7", "", "", "", "2026-11-30 10:00:00"},
		`{"type":"track","messageId":"import-x-1","userId":"7","event":"Order Completed","timestamp":"2026-11-30T10:00:00Z","originalTimestamp":"2026-11-30T10:00:00Z"}`, "")
	// The file's own messageId wins over the derived one.
	f("", []string{"messageId", "anonymousId", "type", "traits.plan"}, []string{"m-9", "a1", "identify", "pro"},
		`{"type":"identify","messageId":"m-9","anonymousId":"a1","traits":{"plan":"pro"},"timestamp":"2026-12-04T12:00:00Z"}`, "")
	// Refusals name the column, the value and the reason.
	f(orders, header, []string{"o1", "", "19.90", "", "", "2026-11-30 10:00:00"}, "", "customer_id |  | userId or anonymousId is required")
	f(orders, header, []string{"o1", "7", "19.90", "", "", "30/11/2026"}, "", `created_at | 30/11/2026 | "30/11/2026" is not a time like 2006-01-02 15:04:05`)
	f(orders, header, []string{"o1", "7", "1", "", "", "1999-01-01 00:00:00"}, "", "created_at | 1999-01-01 00:00:00 | 1999-01-01T00:00:00Z is out of range")
	f("", []string{"userId", "event", "timestamp"}, []string{"u1", "e", "soon"}, "", `timestamp | soon | "soon" is not an ISO-8601 date`)
	f("", []string{"userId", "type"}, []string{"u1", "buy"}, "", `type | buy | unknown type "buy"`)
	f("", []string{"userId"}, []string{"u1"}, "", "event |  | required for track (no column maps event)")
	f("", []string{"userId", "event"}, []string{strings.Repeat("x", 300), "e"}, "", "userId | "+strings.Repeat("x", 300)+" | is 300 bytes")
	f("", []string{"userId", "event", "properties.a"}, []string{"u", "e", "\xff"}, "", "properties.a | \xff | not valid UTF-8")
	f("userId: customer\n", []string{"id"}, []string{"1"}, "", `userId: no column "customer"`)
}
