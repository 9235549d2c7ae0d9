package deploy

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// TestScriptsParse: every shell script of the repository parses (bash -n),
// the device scripts included: those run on a machine lent for minutes,
// where a syntax error costs the lease.
func TestScriptsParse(t *testing.T) {
	scripts := append(glob(t, filepath.Join(root, "scripts", "*.sh")), glob(t, filepath.Join(root, "scripts", "*", "*.sh"))...)
	scripts = append(scripts, filepath.Join(root, ".ci", "run"))
	if len(scripts) < 6 {
		t.Fatalf("found %d scripts: %v", len(scripts), scripts)
	}
	for _, s := range scripts {
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
	}
}
