package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const promDir = "prometheus"

// promtool is Debian's (package prometheus, scripts/install-test-deps.sh);
// without it the test fails, naming the fix.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed: run `make test-deps` (apt-get install prometheus): %v", err)
	}
	return p
}

func TestPromtoolCheckConfig(t *testing.T) {
	runPromtool(t, "check", "config", filepath.Join(promDir, "prometheus.yml"))
}

func TestPromtoolCheckRules(t *testing.T) {
	runPromtool(t, append([]string{"check", "rules"}, glob(t, filepath.Join(promDir, "rules", "*.yml"))...)...)
}

func TestPromtoolTestRules(t *testing.T) {
	runPromtool(t, append([]string{"test", "rules"}, glob(t, filepath.Join(promDir, "tests", "*.yml"))...)...)
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// alertRules returns every rule under prometheus/rules by file.
func alertRules(t *testing.T) map[string][]rule {
	t.Helper()
	out := map[string][]rule{}
	for _, f := range glob(t, filepath.Join(promDir, "rules", "*.yml")) {
		var rf ruleFile
		readYAML(t, f, &rf)
		for _, g := range rf.Groups {
			out[f] = append(out[f], g.Rules...)
		}
	}
	return out
}

// TestAlertsTestedAndDocumented: every alert has a severity, a summary, a
// runbook section in docs/operations.md that its runbook_url points to,
// and a promtool test that expects it to fire.
func TestAlertsTestedAndDocumented(t *testing.T) {
	ops, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#{2,4} (.+)$`).FindAllStringSubmatch(string(ops), -1) {
		headings[anchor(m[1])] = true
	}
	for file, rules := range alertRules(t) {
		test := filepath.Join(promDir, "tests", strings.TrimSuffix(filepath.Base(file), ".yml")+"_test.yml")
		tb, err := os.ReadFile(test)
		if err != nil {
			t.Errorf("%s has no promtool test: %v", file, err)
		}
		for _, r := range rules {
			if r.Alert == "" {
				continue
			}
			if s := r.Labels["severity"]; s != "page" && s != "ticket" {
				t.Errorf("%s: severity %q, want page or ticket", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: no summary or description", r.Alert)
			}
			a := strings.ToLower(r.Alert)
			if !headings[a] {
				t.Errorf("%s: docs/operations.md has no runbook section headed %q", r.Alert, r.Alert)
			}
			if u := r.Annotations["runbook_url"]; !strings.HasSuffix(u, "docs/operations.md#"+a) {
				t.Errorf("%s: runbook_url %q, want it to end docs/operations.md#%s", r.Alert, u, a)
			}
			// A test that expects the alert firing (exp_alerts with labels).
			if !regexp.MustCompile(`alertname: ` + r.Alert + `\s*\n\s*exp_alerts:\s*\n\s*- exp_labels`).Match(tb) {
				t.Errorf("%s: %s never expects it to fire", r.Alert, test)
			}
		}
	}
}

// anchor is GitHub's anchor for a heading.
func anchor(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = regexp.MustCompile(`[^a-z0-9 _-]`).ReplaceAllString(h, "")
	return strings.ReplaceAll(h, " ", "-")
}

type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// scrapeJobs returns prometheus.yml's targets by job.
func scrapeJobs(t *testing.T) map[string][]string {
	t.Helper()
	var pc promConfig
	readYAML(t, filepath.Join(promDir, "prometheus.yml"), &pc)
	out := map[string][]string{}
	for _, sc := range pc.ScrapeConfigs {
		for _, s := range sc.StaticConfigs {
			out[sc.JobName] = append(out[sc.JobName], s.Targets...)
		}
	}
	return out
}
