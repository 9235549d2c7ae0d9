package stream

import (
	"testing"
	"time"

	"github.com/pulse-rt/pulse/internal/testenv"
)

// TestBrokerDownStreamResumes: the only Kafka broker is killed (SIGKILL)
// in the middle of a load and started again 10 s later, on the same port
// and data. The processor does not stop: its transactions fail while the
// broker is away, its tasks reopen from their state once it is back, and
// it catches up on its own. The features equal the reference and every
// segment change is on the topic once.
func TestBrokerDownStreamResumes(t *testing.T) {
	t.Parallel() // waits on brokers and processes more than it computes
	k := testenv.StartKafka(t)
	e := newEnv(t, []string{k.Addr()})
	p := e.processor(Options{}, "")
	stop := e.run(p)
	ref := newReference(t, e.cfg)
	recs := loadInto(ref, 13, 40, 3000)
	half := len(recs) / 2
	for i := 0; i < half; i += 100 {
		e.produce(recs[i:min(i+100, half)]...)
	}
	// Killed while the tasks work: some offsets reached, not all.
	deadline := time.Now().Add(30 * time.Second)
	for sum(p.offsets()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := k.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Second)
	if err := p.fatal.Load(); err != nil {
		t.Fatalf("the processor stopped with the broker down: %v", *err)
	}
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	for i := half; i < len(recs); i += 100 {
		e.produce(recs[i:min(i+100, len(recs))]...)
	}
	e.waitCaughtUp(60*time.Second, p)
	ref.waitMatches(t, e.store, e.clock.now(), 15*time.Second)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	final := segmentChanges(t, e)
	now := e.clock.now()
	for id := range ref.st {
		_, want := ref.vector(id, now)
		if !equal(final[id], want...) {
			t.Errorf("user %s: segments from the topic %v, want %v", id, final[id], want)
		}
	}
}

func sum(m map[int32]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}
