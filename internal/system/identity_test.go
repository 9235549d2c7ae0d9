package system

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/loadtest"
)

// TestLoadtestIdentityMerges runs `pulse loadtest identity` briefly through
// every service of `pulse dev`: each probe's anonymous event, then its
// identify, ends as one person the scorer answers for the anonymous id,
// with the anonymous event counted; none fails.
func TestLoadtestIdentityMerges(t *testing.T) {
	ctx := context.Background()
	cfg, err := Example(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sys, _, err := EndToEnd(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	rep, err := loadtest.Identity(ctx, loadtest.IdentityOptions{
		URL: sys.IngestURL(), WriteKey: sys.Config.KeyWithScope(config.ScopeWrite),
		ScorerURL: sys.ScorerURL(), ReadKey: sys.Config.KeyWithScope(config.ScopeRead),
		Rate: 200, Batch: 20, Merges: 5, Duration: 2 * time.Second, Warmup: 500 * time.Millisecond, Users: 1000,
		Poll: 5 * time.Millisecond, Timeout: 20 * time.Second,
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.Merged.TotalCount() == 0 || rep.Merged.TotalCount() != rep.Probes || rep.Served.TotalCount() != rep.Probes {
		t.Fatalf("%d probes, %d served, %d merged, %d failed: %v", rep.Probes, rep.Served.TotalCount(), rep.Merged.TotalCount(), rep.Failed, rep.FirstErr)
	}
	t.Logf("%d merges, identify 200 -> merged p50 %v max %v", rep.Probes,
		time.Duration(rep.Merged.ValueAtQuantile(50))*time.Microsecond, time.Duration(rep.Merged.Max())*time.Microsecond)
}

// TestLoadtestIdentityOnBroker: the same through a real Kafka broker
// (`pulse loadtest identity -brokers`): the run makes topics and a stream
// group of its own, and every merge is seen there.
func TestLoadtestIdentityOnBroker(t *testing.T) {
	ctx := context.Background()
	brokers := testenv.Kafka(t)
	cfg, err := Example(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sys, _, err := EndToEndOn(ctx, cfg, nil, brokers)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	if sys.Kafka != nil || !strings.HasPrefix(cfg.Kafka.Topics.Events, "pulse-lt-") || !strings.HasPrefix(cfg.Kafka.Topics.Resolved, "pulse-lt-") ||
		cfg.Stream.Group != strings.TrimSuffix(cfg.Kafka.Topics.Events, ".events") {
		t.Fatalf("embedded %v, events %q, resolved %q, group %q: want the broker's, topics and group of the run's own",
			sys.Kafka != nil, cfg.Kafka.Topics.Events, cfg.Kafka.Topics.Resolved, cfg.Stream.Group)
	}
	rep, err := loadtest.Identity(ctx, loadtest.IdentityOptions{
		URL: sys.IngestURL(), WriteKey: sys.Config.KeyWithScope(config.ScopeWrite),
		ScorerURL: sys.ScorerURL(), ReadKey: sys.Config.KeyWithScope(config.ScopeRead),
		Rate: 200, Batch: 20, Merges: 5, Duration: 2 * time.Second, Warmup: time.Second, Users: 1000,
		Poll: 5 * time.Millisecond, Timeout: 60 * time.Second,
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.Merged.TotalCount() == 0 || rep.Merged.TotalCount() != rep.Probes {
		t.Fatalf("%d probes, %d merged, %d failed: %v", rep.Probes, rep.Merged.TotalCount(), rep.Failed, rep.FirstErr)
	}
	// The events went to the run's topic on the broker.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, cfg.Kafka.Topics.Events)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	if n < 400 {
		t.Fatalf("%s on the broker holds %d records, want the run's (≥ 400)", cfg.Kafka.Topics.Events, n)
	}
	t.Logf("%d merges on the broker, p50 %v max %v; %d records in %s", rep.Probes,
		time.Duration(rep.Merged.ValueAtQuantile(50))*time.Microsecond, time.Duration(rep.Merged.Max())*time.Microsecond, n, cfg.Kafka.Topics.Events)
	// Closed, the run leaves nothing on the cluster: its topics and its
	// stream group are deleted.
	sys.Close()
	run := strings.TrimSuffix(cfg.Kafka.Topics.Events, "events")
	testenv.WaitFor(t, 20*time.Second, "deletion of the run's topics", func() bool {
		topics, err := kadm.NewClient(cl).ListTopics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return !slices.ContainsFunc(topics.Names(), func(name string) bool { return strings.HasPrefix(name, run) })
	})
	groups, err := kadm.NewClient(cl).ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups.Groups() {
		if g == cfg.Stream.Group {
			t.Errorf("the run's stream group %s is still on the cluster", g)
		}
	}
}
