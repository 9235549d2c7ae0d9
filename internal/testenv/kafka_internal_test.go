package testenv

import (
	"errors"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestKafkaGC: the broker runs Kafka's own G1 settings unless
// PULSE_TEST_KAFKA_GC names others, which replace them whole.
func TestKafkaGC(t *testing.T) {
	t.Setenv(EnvKafkaGC, "")
	if got := kafkaGC(); !slices.Contains(got, "-XX:+UseG1GC") || !slices.Contains(got, "-XX:MaxGCPauseMillis=20") {
		t.Errorf("default: %q, want Kafka's G1 flags", got)
	}
	t.Setenv(EnvKafkaGC, " -XX:+UseZGC   -XX:ConcGCThreads=1 ")
	if got, want := kafkaGC(), []string{"-XX:+UseZGC", "-XX:ConcGCThreads=1"}; !slices.Equal(got, want) {
		t.Errorf("%s set: %q, want %q", EnvKafkaGC, got, want)
	}
}

// TestKafkaPortTaken: a broker whose port another process holds gives up
// at startup while its JVM may linger; Start reports it as exited, soon
// and not after the two-minute wait, so launch retries on new ports.
func TestKafkaPortTaken(t *testing.T) {
	libs, err := kafkaLibs()
	if err != nil {
		t.Fatal(err)
	}
	java, err := javaPath()
	if err != nil {
		t.Fatal(err)
	}
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s, err := kafkaServer(dir, java, filepath.Join(libs, "*"), []int{held.Addr().(*net.TCPAddr).Port, ports[0]})
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	err = s.Start()
	if !errors.Is(err, errExited) {
		s.Kill()
		t.Fatalf("Start on a taken port: %v, want errExited", err)
	}
	if d := time.Since(begin); d > 60*time.Second {
		t.Errorf("Start took %v to give up", d)
	}
	s.mu.Lock()
	running := s.runningLocked()
	s.mu.Unlock()
	if running {
		t.Error("the broker's process is still running")
	}
	// The same directory on free ports, as launch's retry does it.
	if ports, err = freePorts(2); err != nil {
		t.Fatal(err)
	}
	if s, err = kafkaServer(dir, java, filepath.Join(libs, "*"), ports); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start on free ports after a failed start: %v", err)
	}
	s.Stop()
}
