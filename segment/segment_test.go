package segment

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expr-lang/expr"

	"github.com/pulse-rt/pulse/config"
)

func TestCompileErrors(t *testing.T) {
	names := []string{"revenue_30d", "orders_30d", "country", "recent_categories", "referrer"}
	kinds := []Kind{Number, Number, String, List, Any}
	f := func(rule string, want Error) {
		t.Helper()
		_, err := Compile([]config.Segment{
			{Name: "fine", Rule: "orders_30d > 0"},
			{Name: "big_spenders", Rule: rule, Line: 42},
		}, names, kinds)
		var es Errors
		if !errors.As(err, &es) || len(es) != 1 {
			t.Fatalf("rule %q: got %v, want one Error", rule, err)
		}
		want.Segment = "big_spenders"
		if *es[0] != want {
			t.Fatalf("rule %q:\n got %+v\nwant %+v", rule, *es[0], want)
		}
	}
	f(`revenue_3d > 500`, Error{Line: 1, Column: 1, Msg: "unknown name revenue_3d"})
	f(`orders_30d > 0 && country > 5`, Error{Line: 1, Column: 27, Msg: "invalid operation: > (mismatched types string and int)"})
	f(`revenue_30d * 2`, Error{Line: 1, Column: 1, Msg: "expected bool, but got float64"})
	f(`country`, Error{Line: 1, Column: 1, Msg: "expected bool, but got string"})
	f(`revenue_30d > (500`, Error{Line: 1, Column: 18, Msg: "unexpected token EOF"})
	f("orders_30d > 0 &&\n  revenue_30d >> 2", Error{Line: 2, Column: 16, Msg: "unexpected token Operator(\">\")"})
	f(`"a" in referrer.foo && len(recent_categories) > "x"`, Error{Line: 1, Column: 47, Msg: "invalid operation: > (mismatched types int and string)"})
	f(` `, Error{Msg: "rule is required"})

	// The message names the segment and the position, for `pulse validate`.
	_, err := Compile([]config.Segment{{Name: "big_spenders", Rule: "revenue_3d > 500"}}, names, kinds)
	if got, want := err.Error(), `segment "big_spenders": rule: unknown name revenue_3d (1:1)`; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}

	// Every problem at once.
	_, err = Compile([]config.Segment{
		{Name: "a", Rule: "x > 1"}, {Name: "b", Rule: "orders_30d > 1"}, {Name: "c", Rule: "y"}, {Name: "a", Rule: "true"},
	}, names, kinds)
	if got := strings.Count(err.Error(), "\n") + 1; got != 3 {
		t.Fatalf("want 3 errors, got %d:\n%v", got, err)
	}
}

// TestSlotsMatchExpr checks the bytecode Compile rewrites (features read from
// VM slots) against expr's own evaluation with a map env, over random
// vectors: the guard for an expr upgrade that compiles names differently.
func TestSlotsMatchExpr(t *testing.T) {
	rules := append(append([]string{}, benchRules...),
		`let x = revenue_30d / 2; let y = orders_30d; x > 100 && y > 1 && x + y > 200`,
		`any(recent_categories, {# == country}) || referrer in recent_categories`,
		`(max_order_30d ?? -1) >= 0 && country != nil`,
		`first_seen < now && now - first_seen < 365 * 86400000 ? revenue_lifetime > 100 : orders_lifetime > 3`,
		`referrer == nil || referrer == "" || referrer contains "goo"`,
		`sessions_7d > 2 and not (orders_7d > 0) or page_views_24h in [1, 2, 3]`,
	)
	set, _ := benchSet(t, rules)
	rnd := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...any) any { return xs[rnd.IntN(len(xs))] }
	now := time.UnixMilli(1717200000000)
	for range 2000 {
		values := make([]any, len(benchFeatures))
		env := map[string]any{"now": float64(now.UnixMilli())}
		for i, f := range benchFeatures {
			switch f.kind {
			case Number:
				values[i] = pick(nil, 0.0, 1.0, 2.0, 3.0, 150.0, 501.0, 1500.0, 1717000000000.0, 1710000000000.0)
			case String:
				values[i] = pick(nil, "US", "DE", "", "google")
			case List:
				values[i] = pick(nil, []any{}, []any{"shoes"}, []any{"bags", "hats", "US"})
			case Any:
				values[i] = pick(nil, "google", "", 5.0, "US")
			}
			env[f.name] = values[i]
		}
		m := set.Eval(values, now, nil)
		for i := range set.Len() {
			want, err := expr.Eval(rules[i], env)
			wantIn := err == nil && want == true
			if m.Has(i) != wantIn {
				t.Fatalf("rule %q over %v: Eval says %v, expr says %v (err %v)", rules[i], env, m.Has(i), want, err)
			}
		}
	}
}

func TestEvalConcurrent(t *testing.T) {
	set, values := benchSet(t, benchRules)
	now := time.UnixMilli(1717200000000)
	want := set.Eval(values, now, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			vals := append([]any(nil), values...)
			var m Membership
			for i := range 500 {
				vals[7] = float64((i + g) % 1000) // revenue_30d
				m = set.Eval(vals, now, m)
				if m.Has(0) != (vals[7].(float64) > 500) {
					errs <- fmt.Errorf("goroutine %d: revenue_30d=%v: member=%v", g, vals[7], m.Has(0))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := set.Eval(values, now, nil); !got.Equal(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestEvalWrongLength(t *testing.T) {
	set, values := benchSet(t, benchRules[:1])
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	set.Eval(values[:3], time.Now(), nil)
}

// TestManySegments covers memberships past one 64-bit word.
func TestManySegments(t *testing.T) {
	var segs []config.Segment
	for i := range 150 {
		segs = append(segs, config.Segment{Name: fmt.Sprintf("at_least_%d", i), Rule: fmt.Sprintf("orders >= %d", i)})
	}
	set, err := Compile(segs, []string{"orders"}, []Kind{Number})
	if err != nil {
		t.Fatal(err)
	}
	m70 := set.Eval([]any{70.0}, time.Now(), nil)
	if m70.Count() != 71 || !m70.Has(70) || m70.Has(71) || m70.Has(149) || m70.Has(1000) || m70.Has(-1) {
		t.Fatalf("bad membership %x", m70)
	}
	m130 := set.Eval([]any{130.0}, time.Now(), nil)
	changes := set.Diff(m70, m130, nil)
	if len(changes) != 60 || changes[0].Index != 71 || !changes[0].Enter || changes[59].Segment != "at_least_130" {
		t.Fatalf("bad diff %v", changes)
	}
	back := set.Diff(m130, m70, changes)
	if len(back) != 60 || back[0].Enter || back[0].String() != "exit at_least_71" {
		t.Fatalf("bad diff back %v", back)
	}
	if got := set.Diff(nil, m70, nil); len(got) != 71 {
		t.Fatalf("diff from nothing: %d changes", len(got))
	}
	if got := set.Diff(m70, nil, nil); len(got) != 71 || got[0].Enter {
		t.Fatalf("diff to nothing: %v", got)
	}

	b := set.AppendMembership(nil, m130)
	if len(b) != 1+8+2+131*8 {
		t.Fatalf("encoding is %d bytes", len(b))
	}
	dec, stale, err := set.DecodeMembership(b, m70)
	if err != nil || stale || !dec.Equal(m130) {
		t.Fatalf("decode: %v %v %x", err, stale, dec)
	}
}

func TestDecodeMembershipErrors(t *testing.T) {
	set, values := benchSet(t, benchRules)
	good := set.AppendMembership(nil, set.Eval(values, time.UnixMilli(1717200000000), nil))
	f := func(b []byte) {
		t.Helper()
		if m, _, err := set.DecodeMembership(b, nil); err == nil {
			t.Fatalf("%x: no error, decoded %x", b, m)
		}
	}
	f([]byte{2})
	f(good[:5])
	f(good[:9])
	f(good[:len(good)-1])
	f(append(good[:len(good):len(good)], 0))
	f(append([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01))
}

func FuzzDecodeMembership(f *testing.F) {
	set, values := benchSet(f, benchRules)
	f.Add(set.AppendMembership(nil, set.Eval(values, time.UnixMilli(1717200000000), nil)))
	f.Add(set.AppendMembership(nil, nil))
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, _, err := set.DecodeMembership(b, nil)
		if err != nil {
			return
		}
		// Whatever decodes encodes back to the same members.
		again, stale, err := set.DecodeMembership(set.AppendMembership(nil, m), nil)
		if err != nil || stale || !again.Equal(m) {
			t.Fatalf("%x: decoded %x, round trip %x (stale %v, %v)", b, m, again, stale, err)
		}
	})
}

func TestRecordJSON(t *testing.T) {
	at := time.Date(2024, 1, 1, 10, 0, 0, 0, time.FixedZone("CET", 3600))
	rec := NewRecord(Change{Segment: "big_spenders", Enter: true}, "user", "u1", at, "pulse.events/0/7", nil)
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	var back Record
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.ID != rec.ID || len(rec.ID) != 32 || back.Change != "enter" || !back.At.Equal(at) || back.At.Location() != time.UTC {
		t.Fatalf("round trip: %s -> %+v", b, back)
	}
	// Fields are length-prefixed in the hash: moving a boundary changes the id.
	a := NewRecord(Change{Segment: "a", Enter: true}, "user", "bc", at, "x", nil)
	c := NewRecord(Change{Segment: "ab", Enter: true}, "user", "c", at, "x", nil)
	if a.ID == c.ID {
		t.Fatal("ids collide across field boundaries")
	}
}

func TestForEntity(t *testing.T) {
	segs := []config.Segment{{Name: "a"}, {Name: "b", Entity: "account"}, {Name: "c", Entity: "user"}}
	var got []string
	for _, s := range ForEntity(segs, "user") {
		got = append(got, s.Name)
	}
	if strings.Join(got, ",") != "a,c" {
		t.Fatalf("got %v", got)
	}
}

// TestExampleConfig compiles the e-commerce example's segments over its
// features, with the kinds the stream derives from each aggregation.
func TestExampleConfig(t *testing.T) {
	cfg, err := config.Load("../examples/ecommerce/pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var kinds []Kind
	for _, f := range cfg.Features {
		k := Number
		switch {
		case f.Agg == "last_n":
			k = List
		case (f.Agg == "first" || f.Agg == "last") && f.Field != "timestamp":
			k = Any
		}
		names = append(names, f.Name)
		kinds = append(kinds, k)
	}
	for _, f := range cfg.AutoFeatures("user") { // traits and RFM
		k, err := ParseKind(f.Kind)
		if err != nil {
			t.Fatal(err)
		}
		names, kinds = append(names, f.Name), append(kinds, k)
	}
	set, err := Compile(ForEntity(cfg.Segments, "user"), names, kinds)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(set.Names(), " "); got != "big_spenders active_shoppers cart_abandoners lapsing_customers new_buyers high_value_churn "+
		"rfm:champions rfm:loyal rfm:potential_loyalist rfm:new rfm:promising rfm:need_attention rfm:about_to_sleep rfm:at_risk rfm:cannot_lose rfm:hibernating rfm:lost rfm:prospects" {
		t.Fatalf("segments %s", got)
	}
	values := make([]any, len(names))
	for i := range values {
		values[i] = 0.0
	}
	set.Eval(values, time.Now(), nil)
	if set.Errors() != 0 {
		t.Fatal(set.Stats(0).LastError)
	}
}

// TestMembershipLen: the length of an encoding followed by other bytes is
// the encoding's own, for no, some and every member; a cut one is refused.
func TestMembershipLen(t *testing.T) {
	set, values := benchSet(t, benchRules)
	all := set.Eval(values, time.UnixMilli(1717200000000), nil)
	var some Membership
	for i, n := 0, 0; i < len(set.segs); i++ {
		if all.Has(i) {
			if n++; n%2 == 0 {
				some = sized(some, len(set.segs))
				some.set(i)
			}
		}
	}
	if all.Count() < 2 || some.Count() == 0 {
		t.Fatalf("members: all %d, some %d: the test shows nothing", all.Count(), some.Count())
	}
	for _, m := range []Membership{nil, some, all} {
		enc := set.AppendMembership(nil, m)
		n, err := MembershipLen(append(enc, 1, 2, 3))
		if err != nil || n != len(enc) {
			t.Errorf("%d members: MembershipLen = %d, %v; want %d", m.Count(), n, err, len(enc))
		}
		if _, err := MembershipLen(enc[:len(enc)-1]); err == nil && m.Count() > 0 {
			t.Errorf("%d members: a cut encoding is taken", m.Count())
		}
	}
	if n, err := MembershipLen(nil); n != 0 || err != nil {
		t.Errorf("empty: %d, %v", n, err)
	}
}
