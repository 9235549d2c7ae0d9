package testenv

import (
	"slices"
	"testing"
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
