package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const grafanaDir = "grafana"

type dashboard struct {
	UID    string      `json:"uid"`
	Title  string      `json:"title"`
	Panels []dashPanel `json:"panels"`
}

type dashPanel struct {
	ID         int          `json:"id"`
	Title      string       `json:"title"`
	Type       string       `json:"type"`
	Datasource *datasource  `json:"datasource"`
	Targets    []dashTarget `json:"targets"`
	GridPos    struct{ X, Y, W, H int }
}

type dashTarget struct {
	Expr       string      `json:"expr"`
	RefID      string      `json:"refId"`
	Datasource *datasource `json:"datasource"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// dashboards returns every dashboard under grafana/dashboards by file.
func dashboards(t *testing.T) map[string]dashboard {
	t.Helper()
	out := map[string]dashboard{}
	for _, f := range glob(t, filepath.Join(grafanaDir, "dashboards", "*.json")) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[f] = d
	}
	return out
}

// TestGrafanaProvisioning checks what Grafana would load: the data source
// every panel names, the dashboards folder where compose mounts them, and
// dashboards with unique uids whose panels each run a query.
func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		Datasources []struct {
			UID  string `yaml:"uid"`
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join(grafanaDir, "provisioning", "datasources", "prometheus.yml"), &ds)
	uids := map[string]string{}
	for _, d := range ds.Datasources {
		uids[d.UID] = d.Type
	}
	// The data source reaches the compose's Prometheus.
	c := loadCompose(t)
	if len(ds.Datasources) != 1 || !strings.HasPrefix(ds.Datasources[0].URL, "http://prometheus:9090") || c.Services["prometheus"].Image == "" {
		t.Errorf("want one data source at http://prometheus:9090, the compose's prometheus service; got %+v", ds.Datasources)
	}

	var prov struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, filepath.Join(grafanaDir, "provisioning", "dashboards", "pulse.yml"), &prov)
	mounted := false
	for _, v := range c.Services["grafana"].Volumes {
		parts := strings.Split(v, ":")
		for _, p := range prov.Providers {
			if strings.TrimPrefix(parts[0], "./") == "deploy/grafana/dashboards" && parts[1] == p.Options.Path {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("the grafana service does not mount deploy/grafana/dashboards where the provider reads (%+v)", prov.Providers)
	}

	seen := map[string]string{}
	for f, d := range dashboards(t) {
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: no uid or title", f)
		}
		if other, dup := seen[d.UID]; dup {
			t.Errorf("%s and %s share uid %s", f, other, d.UID)
		}
		seen[d.UID] = f
		if len(d.Panels) == 0 {
			t.Errorf("%s: no panels", f)
		}
		for _, p := range d.Panels {
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", f, p.Title)
			}
			if p.Datasource == nil || uids[p.Datasource.UID] != "prometheus" {
				t.Errorf("%s: panel %q: data source %+v is not the provisioned Prometheus", f, p.Title, p.Datasource)
			}
			for _, q := range p.Targets {
				if strings.TrimSpace(q.Expr) == "" || len(metricsIn(q.Expr)) == 0 {
					t.Errorf("%s: panel %q: query %q names no metric", f, p.Title, q.Expr)
				}
			}
		}
	}
}

// TestEveryServiceWatched: each Pulse service the compose file starts has
// its dashboard and its alert rules, found by the service's name.
func TestEveryServiceWatched(t *testing.T) {
	for _, svc := range pulseServices(t, loadCompose(t)) {
		if len(svc.Profiles) > 0 {
			continue // started on request only
		}
		for _, f := range []string{
			filepath.Join(grafanaDir, "dashboards", svc.name+".json"),
			filepath.Join(promDir, "rules", svc.name+".yml"),
		} {
			if _, err := os.Stat(f); err != nil {
				t.Errorf("service %s: %v", svc.name, err)
			}
		}
	}
}
