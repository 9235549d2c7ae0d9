package segment

import (
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
)

// benchFeatures is the e-commerce example's vector.
var benchFeatures = []struct {
	name string
	kind Kind
	val  any
}{
	{"orders_1h", Number, 0.0},
	{"orders_24h", Number, 1.0},
	{"orders_7d", Number, 2.0},
	{"orders_30d", Number, 3.0},
	{"orders_lifetime", Number, 7.0},
	{"revenue_24h", Number, 120.5},
	{"revenue_7d", Number, 260.0},
	{"revenue_30d", Number, 612.25},
	{"revenue_lifetime", Number, 1804.0},
	{"max_order_30d", Number, 310.0},
	{"avg_order_value_30d", Number, 204.08},
	{"last_order_at", Number, 1717000000000.0},
	{"days_since_last_order", Number, 2.0},
	{"sessions_7d", Number, 5.0},
	{"page_views_24h", Number, 17.0},
	{"products_viewed_1h", Number, 4.0},
	{"products_viewed_24h", Number, 9.0},
	{"cart_adds_24h", Number, 1.0},
	{"recent_categories", List, []any{"shoes", "bags", "hats"}},
	{"country", String, "US"},
	{"first_seen", Number, 1700000000000.0},
	{"referrer", Any, "google"},
}

// benchRules are 20 rules of the kinds users write: thresholds, conjunctions,
// string equality, list membership, nil checks.
var benchRules = []string{
	`revenue_30d > 500`,
	`products_viewed_1h >= 3`,
	`cart_adds_24h > 0 && orders_24h == 0`,
	`orders_lifetime >= 2 && orders_30d == 0`,
	`orders_lifetime == 1 && orders_7d == 1`,
	`country == "US" && revenue_lifetime > 1000`,
	`country in ["DE", "FR", "IT", "ES"]`,
	`"shoes" in recent_categories`,
	`sessions_7d >= 3 && orders_7d == 0`,
	`page_views_24h > 20 || products_viewed_24h > 10`,
	`max_order_30d >= 300`,
	`avg_order_value_30d > 150 && orders_30d >= 2`,
	`days_since_last_order >= 0 && days_since_last_order < 7`,
	`orders_1h > 0`,
	`revenue_24h > 100 && revenue_7d < 1000`,
	`referrer == "google" && orders_lifetime == 0`,
	`country != "US" && sessions_7d > 0`,
	`last_order_at > 0 && now - last_order_at > 30 * 86400000`,
	`first_seen > now - 7 * 86400000`,
	`cart_adds_24h >= 2 && products_viewed_24h >= 5 && orders_24h == 0`,
}

func benchSet(tb testing.TB, rules []string) (*Set, []any) {
	tb.Helper()
	var names []string
	var kinds []Kind
	var values []any
	for _, f := range benchFeatures {
		names = append(names, f.name)
		kinds = append(kinds, f.kind)
		values = append(values, f.val)
	}
	var segs []config.Segment
	for i, r := range rules {
		segs = append(segs, config.Segment{Name: "s" + string(rune('a'+i)), Rule: r})
	}
	set, err := Compile(segs, names, kinds)
	if err != nil {
		tb.Fatal(err)
	}
	return set, values
}

// BenchmarkEval is one Eval of 20 rules: divide ns/op by 20 for one rule.
func BenchmarkEval(b *testing.B) {
	bench := func(b *testing.B, rules []string) {
		set, values := benchSet(b, rules)
		now := time.UnixMilli(1717200000000)
		var m Membership
		b.ReportAllocs()
		for b.Loop() {
			m = set.Eval(values, now, m)
		}
		b.ReportMetric(float64(b.N)*float64(len(rules))/b.Elapsed().Seconds(), "rules/s")
		if set.Errors() != 0 {
			b.Fatalf("errors: %v", set.Stats(0).LastError)
		}
	}
	b.Run("20rules", func(b *testing.B) { bench(b, benchRules) })
	// The same without the two rules doing arithmetic on now.
	comparisons := append(append([]string{}, benchRules[:17]...), benchRules[19], benchRules[0], benchRules[1])
	b.Run("20comparisons", func(b *testing.B) { bench(b, comparisons) })
}

func BenchmarkDiff(b *testing.B) {
	set, values := benchSet(b, benchRules)
	old := set.Eval(values, time.UnixMilli(1717200000000), nil)
	values[7] = 0.0 // revenue_30d
	values[19] = "DE"
	m := set.Eval(values, time.UnixMilli(1717200000000), nil)
	var changes []Change
	b.ReportAllocs()
	for b.Loop() {
		changes = set.Diff(old, m, changes)
	}
	if len(changes) == 0 {
		b.Fatal("no changes")
	}
}

func BenchmarkMembershipEncoding(b *testing.B) {
	set, values := benchSet(b, benchRules)
	m := set.Eval(values, time.UnixMilli(1717200000000), nil)
	buf := set.AppendMembership(nil, m)
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = set.AppendMembership(buf[:0], m)
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		var dst Membership
		for b.Loop() {
			dst, _, _ = set.DecodeMembership(buf, dst)
		}
	})
}
