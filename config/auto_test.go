package config

import (
	"strings"
	"testing"
	"time"
)

const autoBase = `
features:
  - name: last_order_at
    agg: last
    event: Order Completed
    field: timestamp
  - name: days_since_last_order
    expr: 'last_order_at > 0 ? floor((now - last_order_at) / 86400000) : -1'
  - name: orders_365d
    agg: count
    event: Order Completed
    window: 365d
  - name: revenue_365d
    agg: sum
    event: Order Completed
    field: properties.revenue
    window: 365d
models:
  - name: churn
    path: churn.json
    features: [orders_365d, revenue_365d]
`

func TestRFMAndTraitsBlocks(t *testing.T) {
	c, err := Parse([]byte(autoBase+`
rfm:
  recency: days_since_last_order
  frequency: orders_365d
  monetary: revenue_365d
traits:
  - name: churn_risk
    model: churn
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := c.RFM
	if r.Entity != "user" || r.Scores != 5 || r.Refresh.D() != 10*time.Minute || r.Line != 24 {
		t.Fatalf("defaults: %+v", r)
	}
	if c.Traits[0].Entity != "user" || c.Traits[0].Line != 28 {
		t.Fatalf("trait: %+v", c.Traits[0])
	}
	var names []string
	for _, s := range c.Segments {
		if !s.Auto || !strings.HasPrefix(s.Rule, `rfm_group == "`) {
			t.Fatalf("segment %+v", s)
		}
		names = append(names, s.Name)
	}
	want := "rfm:champions rfm:loyal rfm:potential_loyalist rfm:new rfm:promising rfm:need_attention rfm:about_to_sleep rfm:at_risk rfm:cannot_lose rfm:hibernating rfm:lost rfm:prospects"
	if strings.Join(names, " ") != want {
		t.Fatalf("segments %v", names)
	}
	var af []string
	for _, f := range c.AutoFeatures("user") {
		af = append(af, f.Name+":"+f.Kind)
	}
	if got := strings.Join(af, " "); got != "churn_risk:number rfm_r:number rfm_f:number rfm_m:number rfm_group:string rfm_previous_group:string rfm_changed_at:number" {
		t.Fatalf("auto features %s", got)
	}
}

func TestRFMCustomGroups(t *testing.T) {
	c, err := Parse([]byte(autoBase+`
rfm:
  recency: days_since_last_order
  frequency: orders_365d
  monetary: revenue_365d
  scores: 3
  refresh: 1m
  groups:
    - {name: best, r: "3", f: "2-3"}
    - {name: others}
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RFM.GroupNames(); strings.Join(got, ",") != "best,others,prospects" {
		t.Fatalf("groups %v", got)
	}
}

func TestRFMAndTraitsProblems(t *testing.T) {
	_, err := Parse([]byte(autoBase+`  - name: multi
    path: m.json
    features: [orders_365d]
    labels: [a, b, c]
rfm:
  recency: days_since
  frequency: orders_365d
  scores: 4
  refresh: 10ms
traits:
  - name: orders_365d
    model: churn
  - name: x
    model: nope
  - name: y
    model: multi
`), "t.yaml")
	errs, ok := AsErrors(err)
	if !ok {
		t.Fatalf("got %v", err)
	}
	got := errs.Error()
	for _, want := range []string{
		`rfm.recency: no user feature "days_since"`,
		`rfm.monetary: required`,
		`rfm.groups: the default groups are for 5 scores`,
		`rfm.refresh: must be between 1s and 7d`,
		`traits[orders_365d].name: "orders_365d" is already a feature`,
		`traits[x].model: no model "nope" in models`,
		`traits[y].model: model "multi" has 3 classes`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	_, err = Parse([]byte(autoBase+`
rfm:
  recency: days_since_last_order
  frequency: orders_365d
  monetary: revenue_365d
  groups:
    - {name: a, r: "1-6"}
`), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), `rfm.groups: group "a": score range "1-6" must lie within 1-5`) {
		t.Fatalf("got %v", err)
	}
	_, err = Parse([]byte(autoBase+"rfm:\n  recency: days_since_last_order\n  groups: best\n"), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), `rfm.groups must be "default" or a list`) {
		t.Fatalf("got %v", err)
	}
}
