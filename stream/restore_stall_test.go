package stream

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRestoreStall: a restore whose changelog read stalls short of its
// fence (here another producer's transaction left open on every changelog
// partition holds the last stable offset) reads again on a new client and
// ends once the stall does, the state whole; a stall that never ends fails
// the task's opening with the reason, rather than hanging it.
func TestRestoreStall(t *testing.T) {
	defer func(d time.Duration, n int) { restoreStall, restoreStalls = d, n }(restoreStall, restoreStalls)
	restoreStall, restoreStalls = 100*time.Millisecond, 5
	e := newEnv(t, nil)
	ctx := context.Background()
	p := e.processor(Options{}, "")
	stop := e.run(p)
	e.produce(eventRecord(t, order("u1", "m1", t0.Add(-time.Minute), 10)))
	e.waitCaughtUp(30*time.Second, p)
	waitFeature(t, e, "u1", "orders_lifetime", 1.0, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Another producer's transaction, open on every changelog partition.
	zombie := func() *kgo.Client {
		z, err := kafka.NewClient(e.cfg.Kafka, append(kafka.ProducerOpts(), kgo.TransactionalID(e.cfg.Stream.Group+".zombie"),
			kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
		if err != nil {
			t.Fatal(err)
		}
		if err := z.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for part := range int32(e.cfg.Kafka.Partitions) {
			r := &kgo.Record{Topic: e.cfg.Kafka.Topics.State, Partition: part, Key: []byte("__zombie"), Value: []byte("x")}
			if err := z.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		return z
	}
	opts := Options{}

	// A stall that never ends: the opening fails, and says why.
	z := zombie()
	p2 := e.processor(opts, t.TempDir())
	if tk, err := p2.openTask(ctx, 0); err == nil || !strings.Contains(err.Error(), "nothing past offset") {
		if tk != nil {
			tk.close()
		}
		t.Fatalf("opening a task whose changelog read never gets past an open transaction: %v", err)
	}
	z.EndTransaction(ctx, kgo.TryAbort)
	z.Close()

	// A stall that ends (the transaction aborted after a few waits): the
	// restore goes on and the state is whole, u1's next order its second.
	z = zombie()
	go func() {
		time.Sleep(3 * restoreStall)
		z.EndTransaction(ctx, kgo.TryAbort)
		z.Close()
	}()
	p3 := e.processor(opts, t.TempDir())
	stop = e.run(p3)
	e.produce(eventRecord(t, order("u1", "m2", t0.Add(-time.Minute), 10)))
	e.waitCaughtUp(30*time.Second, p3)
	waitFeature(t, e, "u1", "orders_lifetime", 2.0, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
