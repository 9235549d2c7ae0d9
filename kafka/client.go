package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// NewClient builds a client for the configured brokers. Extra options
// (consumer groups, topics) come after the defaults and override them.
//
// Its fetches use no fetch session (KIP-227): each fetch names every
// partition it reads, a few dozen bytes each, which is all a session
// saves for Pulse's consumers of a few partitions each. With sessions,
// franz-go's Close (v1.22.2) kills the session while a fetch answered
// just then may still be recording its partitions in it: a data race,
// seen under -race in CI when the linker closed its restore reader at its
// fence with more records behind it. A client without a session has none
// for Close to kill.
func NewClient(c config.Kafka, opts ...kgo.Opt) (*kgo.Client, error) {
	base := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
		kgo.DialTimeout(5 * time.Second),
		kgo.RetryTimeout(30 * time.Second),
		kgo.WithLogger(kgoLogger{slog.Default()}),
		kgo.DisableFetchSessions(),
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("cannot create kafka client: %w", err)
	}
	return cl, nil
}

// GroupSessionTimeout is how long a consumer group member that stopped
// heartbeating (a crashed process) keeps its partitions before the group
// hands them to the others, or to the process restarted in its place:
// the stream's, the destinations' and the history writer's groups. The
// clients' default, 45 s, would stall every change of the dead member's
// partitions that long.
const GroupSessionTimeout = 10 * time.Second

// GroupOpts join the consumer group named group with Pulse's session
// timeout (GroupSessionTimeout); the destinations' and history's
// consumers use them (the stream's takes its timeout from its Options).
func GroupOpts(group string) []kgo.Opt {
	return []kgo.Opt{kgo.ConsumerGroup(group), kgo.SessionTimeout(GroupSessionTimeout)}
}

// ProducerOpts are the producer settings every Pulse producer uses: an
// idempotent producer with acks=all (franz-go's default, stated here so
// nobody weakens it by accident), a linger so concurrent requests share
// batches, and snappy compression (the cheapest on CPU of the codecs every
// broker reads).
//
// The linger is 5 ms, the Java producer's default since Kafka 4.0
// (KIP-1030): the broker's cost is per batch as much as per record. Ingest
// under open-loop load at half the raw produce rate, real Kafka 4.2, two
// runs each: the broker spent 1.47-1.52 CPU-µs per event at 2 ms and
// 1.06-1.12 at 5 ms, and the whole machine 3.97-4.10 against 3.41-3.43
// (docs/BENCHMARKS.md). It adds at most 3 ms to an answer at low load.
//
// Each produce request's stages are timed in
// pulse_kafka_produce_request_seconds (kafka/metrics.go).
func ProducerOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.ProducerBatchCompression(kgo.SnappyCompression(), kgo.NoCompression()),
		kgo.ProducerBatchMaxBytes(1 << 20),
		kgo.MaxBufferedRecords(200_000),
		kgo.RecordDeliveryTimeout(30 * time.Second),
		kgo.WithHooks(newProduceHook(), NewReachability()),
	}
}

// TopicSpec says how Pulse creates one of its topics.
type TopicSpec struct {
	Name    string
	Configs map[string]*string
	// Partitions overrides config.Kafka.Partitions when set.
	Partitions int32
}

// Topics lists every topic Pulse uses with its configs: the changelog is
// and the activations are compacted; the event log keeps a week by default.
func Topics(c config.Kafka) []TopicSpec {
	compact := "compact"
	specs := []TopicSpec{
		{Name: c.Topics.Events},
		{Name: c.Topics.Invalid},
		{Name: c.Topics.Segments},
		{Name: c.Topics.Predictions},
		{Name: c.Topics.State, Configs: map[string]*string{"cleanup.policy": &compact}},
		// Seeds: as many partitions as the events (EnsureTopics gives every
		// topic the same count), so seed partition p meets event partition p.
		{Name: c.Topics.Seeds},
		{Name: c.Topics.Activations, Configs: map[string]*string{"cleanup.policy": &compact}},
		// Identity: the links, compacted by identifier; its requests in
		// one partition (one fold order); the resolved (repartition)
		// topic co-partitioned with the events.
		{Name: c.Topics.Identity, Configs: map[string]*string{"cleanup.policy": &compact}},
		{Name: c.Topics.IdentityRequests, Partitions: 1},
		{Name: c.Topics.Resolved},
		// The suppressed entity ids (people deleted with suppression),
		// compacted: ingest reads it whole.
		{Name: c.Topics.Suppressions, Configs: map[string]*string{"cleanup.policy": &compact}},
		// The progress of deletions on request (deletion.Record), compacted
		// by request and part: the scorer reads it whole.
		{Name: c.Topics.Deletions, Configs: map[string]*string{"cleanup.policy": &compact}},
		// Trait scores as they change (model.TraitScore), for history.
		{Name: c.Topics.Traits},
		// RFM boundaries and partition summaries (stream/rfm_topic.go).
		{Name: c.Topics.RFM, Configs: map[string]*string{"cleanup.policy": &compact}},
	}
	// The topics whose records expire (not compacted): kafka.retention.
	if r := c.Retention.D(); r > 0 {
		ms := strconv.FormatInt(r.Milliseconds(), 10)
		for i := range specs {
			if specs[i].Configs["cleanup.policy"] != nil {
				continue
			}
			if specs[i].Configs == nil {
				specs[i].Configs = map[string]*string{}
			}
			specs[i].Configs[retentionKey] = &ms
		}
	}
	// A config made by hand (without ApplyDefaults) may name only some.
	return slices.DeleteFunc(specs, func(s TopicSpec) bool { return s.Name == "" })
}

const retentionKey = "retention.ms"

// EnsureTopics creates the missing topics; existing ones are left alone,
// but for kafka.retention, which it sets on those that expire records when
// theirs differs. It returns once the broker's metadata lists every topic
// and describes the retention set: a controller acknowledges a creation or
// a change before the brokers' metadata caches have it, and a describe in
// that gap says the topic does not exist, or gives its old config.
func EnsureTopics(ctx context.Context, cl *kgo.Client, c config.Kafka) error {
	adm := kadm.NewClient(cl)
	topics := Topics(c)
	names := make([]string, len(topics))
	var existing []string // with a retention to put right
	for i, t := range topics {
		names[i] = t.Name
		parts := int32(c.Partitions)
		if t.Partitions > 0 {
			parts = t.Partitions
		}
		resp, err := adm.CreateTopic(ctx, parts, int16(c.ReplicationFactor), t.Configs, t.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("cannot create topic %s: %w", t.Name, err)
		}
		if err != nil && t.Configs[retentionKey] != nil {
			existing = append(existing, t.Name)
		}
	}
	if err := waitListed(ctx, cl, names); err != nil {
		return err
	}
	return setRetention(ctx, adm, c, existing)
}

// setRetention sets kafka.retention on the existing topics whose
// retention.ms differs from it, and returns once the brokers describe the
// new value: the controller acknowledges the change before the brokers'
// metadata has it, and a describe in that gap still gives the old one.
func setRetention(ctx context.Context, adm *kadm.Client, c config.Kafka, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	want := strconv.FormatInt(c.Retention.D().Milliseconds(), 10)
	differ, err := retentionDiffers(ctx, adm, topics, want)
	if err != nil || len(differ) == 0 {
		return err
	}
	resps, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: retentionKey, Value: &want}}, differ...)
	if err == nil {
		for _, r := range resps {
			if r.Err != nil {
				err = fmt.Errorf("%s: %w", r.Name, r.Err)
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("cannot set kafka.retention (%s) on the existing topics: %w", c.Retention, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		left, err := retentionDiffers(wctx, adm, differ, want)
		if err == nil && len(left) == 0 {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%v still described with another retention.ms", left)
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("kafka.retention (%s) set but not yet in effect: %w: %w", c.Retention, err, wctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// retentionDiffers returns those of topics whose retention.ms is not want.
func retentionDiffers(ctx context.Context, adm *kadm.Client, topics []string, want string) ([]string, error) {
	described, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("cannot read the topics' retention: %w", err)
	}
	var differ []string
	for _, rc := range described {
		if rc.Err != nil {
			return nil, fmt.Errorf("cannot read %s's retention: %w", rc.Name, rc.Err)
		}
		have := ""
		for _, cf := range rc.Configs {
			if cf.Key == retentionKey && cf.Value != nil {
				have = *cf.Value
			}
		}
		if have != want {
			differ = append(differ, rc.Name)
		}
	}
	return differ, nil
}

// waitListed asks the brokers every 20 ms, for at most 30 s, until their
// metadata lists every one of names. It asks them each time: kadm's
// ListTopics answers from the client's metadata cache, which keeps a
// topic's "unknown" for MetadataMinAge (5 s), so each poll in the gap would
// cost 5 s.
func waitListed(ctx context.Context, cl *kgo.Client, names []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	for _, n := range names {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(n)
		req.Topics = append(req.Topics, rt)
	}
	// missing is what the brokers' last answer lacked: the reason given up
	// with, rather than the error of a request the deadline cut short.
	var missing error
	for {
		resp, err := req.RequestWith(ctx, cl)
		if err == nil {
			if missing = unlisted(resp, names); missing == nil {
				return nil
			}
			err = missing
		} else if missing != nil && ctx.Err() != nil {
			err = missing
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topics created but not listed by the brokers: %w: %w", err, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// unlisted says which of names resp does not list, or nil.
func unlisted(resp *kmsg.MetadataResponse, names []string) error {
	codes := make(map[string]int16, len(resp.Topics))
	for _, t := range resp.Topics {
		if t.Topic != nil {
			codes[*t.Topic] = t.ErrorCode
		}
	}
	var errs []error
	for _, n := range names {
		code, ok := codes[n]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: not listed", n))
		} else if err := kerr.ErrorForCode(code); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errList(errs)
}

// errList is several errors on one line (errors.Join gives each its own),
// for a log line that names every topic.
type errList []error

func (l errList) Error() string {
	msgs := make([]string, len(l))
	for i, err := range l {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (l errList) Unwrap() []error { return l }

// Ping checks that a broker answers metadata requests.
func Ping(ctx context.Context, cl *kgo.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka unreachable: %w", err)
	}
	return nil
}

// kgoLogger routes franz-go's warnings and errors to slog.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, kv ...any) {
	switch level {
	case kgo.LogLevelError:
		k.l.Error("kafka: "+msg, kv...)
	case kgo.LogLevelWarn:
		k.l.Warn("kafka: "+msg, kv...)
	default:
		k.l.Debug("kafka: "+msg, kv...)
	}
}

// Failures collects the errors of asynchronous produces: pass Promise to
// each Produce, flush, then read Err.
type Failures struct {
	mu  sync.Mutex
	err error
}

// Promise is a kgo produce promise that records a failure.
func (f *Failures) Promise(_ *kgo.Record, err error) {
	if err != nil {
		f.mu.Lock()
		f.err = errors.Join(f.err, err)
		f.mu.Unlock()
	}
}

// Err returns every failure recorded so far, joined, or nil.
func (f *Failures) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// DefaultDeleteRetention is Kafka's delete.retention.ms when neither the
// topic nor the broker sets it: a day.
const DefaultDeleteRetention = 24 * time.Hour

// DeleteRetention returns how long the broker keeps the tombstones of a
// compacted topic after compacting them (its delete.retention.ms, the
// topic's own or the broker's default). A reader that catches up on such a
// topic from an offset older than that may miss deletions: compaction can
// have removed a tombstone together with the record it deleted.
func DeleteRetention(ctx context.Context, cl *kgo.Client, topic string) (time.Duration, error) {
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("cannot read %s's delete.retention.ms: %w", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		return 0, fmt.Errorf("cannot read %s's delete.retention.ms: %w", topic, err)
	}
	for _, cf := range rc.Configs {
		if cf.Key != "delete.retention.ms" || cf.Value == nil {
			continue
		}
		ms, err := strconv.ParseInt(*cf.Value, 10, 64)
		if err != nil || ms < 0 {
			return 0, fmt.Errorf("%s's delete.retention.ms %q is not a number of milliseconds", topic, *cf.Value)
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	return DefaultDeleteRetention, nil
}

// DeleteRetentionOrDefault is DeleteRetention, or DefaultDeleteRetention
// when the broker does not say (logged to log): a reader deciding whether
// it may catch up from an old offset.
func DeleteRetentionOrDefault(ctx context.Context, cl *kgo.Client, topic string, log *slog.Logger) time.Duration {
	keep, err := DeleteRetention(ctx, cl, topic)
	if err != nil {
		log.Warn("cannot read delete.retention.ms; taking the default", "topic", topic, "err", err, "default", DefaultDeleteRetention)
		return DefaultDeleteRetention
	}
	return keep
}
