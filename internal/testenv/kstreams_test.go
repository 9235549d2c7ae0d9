package testenv

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The peer's jar is rebuilt when it is missing or a source is newer; the
// build's own output (target/) does not count as a source.
func TestPeerJarFresh(t *testing.T) {
	dir := t.TempDir()
	jar := filepath.Join(dir, "target", KStreamsPeerJarName)
	src := filepath.Join(dir, "src", "main", "java", "Peer.java")
	for _, p := range []string{src, filepath.Join(dir, "pom.xml")} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if fresh, err := jarFresh(dir, jar); err != nil || fresh {
		t.Fatalf("no jar: fresh %v, %v", fresh, err)
	}
	if err := os.MkdirAll(filepath.Dir(jar), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jar, []byte("jar"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	for _, p := range []string{src, filepath.Join(dir, "pom.xml")} {
		os.Chtimes(p, old, old)
	}
	// A newer file under target/ is the build's, not a source.
	if err := os.WriteFile(filepath.Join(dir, "target", "classes.txt"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(jar, old.Add(time.Minute), old.Add(time.Minute))
	if fresh, err := jarFresh(dir, jar); err != nil || !fresh {
		t.Fatalf("jar newer than its sources: fresh %v, %v", fresh, err)
	}
	now := time.Now()
	os.Chtimes(src, now, now)
	if fresh, err := jarFresh(dir, jar); err != nil || fresh {
		t.Fatalf("a source newer than the jar: fresh %v, %v", fresh, err)
	}
}
