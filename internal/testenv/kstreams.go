package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// EnvKStreamsPeerJar names a built Kafka Streams peer jar to use instead of
// the one under loadtest/peers/kstreams/target.
const EnvKStreamsPeerJar = "PULSE_KSTREAMS_PEER_JAR"

// KStreamsPeerDir is the peer's Maven project, relative to the module root.
const KStreamsPeerDir = "loadtest/peers/kstreams"

// KStreamsPeerJarName is the shaded jar its build leaves in target/.
const KStreamsPeerJarName = "pulse-peer-kstreams.jar"

var peerJar struct {
	once sync.Once
	path string
	err  error
}

// KStreamsPeerJar returns the path of the Kafka Streams peer's shaded jar
// (`pulse loadtest peer`): $PULSE_KSTREAMS_PEER_JAR, else
// loadtest/peers/kstreams/target/pulse-peer-kstreams.jar, built with Maven
// first when it is missing or older than its sources (offline when the
// local repository holds everything, else online). It fails, never skips,
// when the jar cannot be had.
func KStreamsPeerJar() (string, error) {
	peerJar.once.Do(func() { peerJar.path, peerJar.err = findPeerJar() })
	return peerJar.path, peerJar.err
}

func findPeerJar() (string, error) {
	if p := os.Getenv(EnvKStreamsPeerJar); p != "" {
		if !fileExists(p) {
			return "", fmt.Errorf("%s=%s: no such file", EnvKStreamsPeerJar, p)
		}
		return p, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, KStreamsPeerDir)
	jar := filepath.Join(dir, "target", KStreamsPeerJarName)
	if fresh, err := jarFresh(dir, jar); err != nil {
		return "", err
	} else if fresh {
		return jar, nil
	}
	if err := buildPeerJar(dir); err != nil {
		return "", err
	}
	if !fileExists(jar) {
		return "", fmt.Errorf("the Kafka Streams peer's build left no %s", jar)
	}
	return jar, nil
}

// jarFresh says whether jar exists and is newer than the pom and every
// source file under dir/src.
func jarFresh(dir, jar string) (bool, error) {
	st, err := os.Stat(jar)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	built := st.ModTime()
	stale := false
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "target" {
			return filepath.SkipDir
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.ModTime().After(built) {
			stale = true
		}
		return nil
	})
	return !stale, err
}

// buildPeerJar runs `mvn package` in dir, offline first.
func buildPeerJar(dir string) error {
	mvn, err := lookPath("mvn")
	if err != nil {
		return fmt.Errorf("cannot build the Kafka Streams peer: %w (run `make test-deps`)", err)
	}
	var firstOut []byte
	for _, offline := range []bool{true, false} {
		args := []string{"-q", "-B", "-f", filepath.Join(dir, "pom.xml"), "package"}
		if offline {
			args = append([]string{"-o"}, args...)
		}
		cmd := exec.Command(mvn, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		if err := cmd.Run(); err == nil {
			return nil
		} else if !offline {
			b := out.Bytes()
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			return fmt.Errorf("cannot build the Kafka Streams peer (mvn package, %s): %w\n%s\n(offline try:\n%s)", time.Since(start).Round(time.Second), err, b, tail(firstOut, 1500))
		}
		firstOut = out.Bytes()
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// moduleRoot is the directory holding go.mod, from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if fileExists(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the module root (go.mod) above the working directory")
		}
		dir = parent
	}
}
