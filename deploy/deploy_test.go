package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/pulse-rt/pulse/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// root is the repository's root, relative to this package.
const root = ".."

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func glob(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no file matches %s", pattern)
	}
	return files
}

// metricRe finds the metric names in a PromQL expression: Pulse's own
// (all prefixed pulse_) and up.
var metricRe = regexp.MustCompile(`\b(pulse_[a-z0-9_]+|up)\b`)

func metricsIn(expr string) []string {
	return metricRe.FindAllString(expr, -1)
}
