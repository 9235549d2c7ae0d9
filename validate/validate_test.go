package validate

import (
	"strings"
	"testing"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/scorer"
)

func TestValidateExample(t *testing.T) {
	cfg, err := config.Load("../examples/ecommerce/pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if errs := Config(cfg, "pulse.yaml", scorer.CheckModel); len(errs) > 0 {
		t.Fatalf("the example config has problems:\n%s", errs.Error())
	}
}

func TestValidateReportsEveryLayer(t *testing.T) {
	cfg, err := config.Load("testdata/bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := Config(cfg, "bad.yaml", scorer.CheckModel).Error()
	for _, want := range []string{
		`bad.yaml:9: feature "aov": expr: unknown name orders_3d (line 1, column 11)`,
		`bad.yaml:11: feature "c1": expr: dependency cycle: c1 -> c2 -> c1`,
		`bad.yaml:15: feature "w": where: unexpected token EOF`,
		`bad.yaml:19: segment "big": rule: unknown name revenue_30d (1:1)`,
		`bad.yaml:24: models[m]: cannot read model`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}

func TestValidateSegmentTypes(t *testing.T) {
	cfg, err := config.Parse([]byte(`
features:
  - name: orders_7d
    agg: count
    window: 7d
  - name: country
    agg: last
    field: traits.country
segments:
  - name: typed
    rule: 'orders_7d > "x"'
  - name: ok
    rule: 'country == "US" && orders_7d >= 1'
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := Config(cfg, "t.yaml", scorer.CheckModel).Error()
	if !strings.Contains(got, `t.yaml:10: segment "typed": rule:`) || strings.Contains(got, `"ok"`) {
		t.Fatalf("want only the type error of segment typed, got:\n%s", got)
	}
}
