package stream

import (
	"context"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/kafka"
)

// TestInputTopicRecreatedPastOldOffsets: the topics deleted and made again
// under the same names (a rebuild that kept the stream's data dir), and
// the new events topic already past the old one's offsets when the stream
// starts: every new event counts, none is skipped as if read before, and
// the old state is gone.
func TestInputTopicRecreatedPastOldOffsets(t *testing.T) {
	e := newEnv(t, nil)
	old, _ := load(21, 10, 200)
	e.produce(old...)
	dataDir := t.TempDir()
	p := e.processor(Options{}, dataDir)
	stop := e.run(p)
	e.waitCaughtUp(20*time.Second, p)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	e2 := newEnv(t, nil)
	e2.cfg.Kafka.Topics = e.cfg.Kafka.Topics
	e2.cfg.Stream.Group = e.cfg.Stream.Group
	if err := kafka.EnsureTopics(context.Background(), e2.prod, e2.cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	ref := newReference(t, e2.cfg)
	e2.produce(loadInto(ref, 22, 10, 600)...) // three times as many: past every old offset
	p = e2.processor(Options{}, dataDir)
	e2.run(p)
	e2.waitCaughtUp(20*time.Second, p)
	ref.check(t, e2.store, e2.clock.now())
}
