package kafka

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// lateTopic is a cluster whose controller acknowledges the creation of one
// topic before its brokers know it, as a KRaft controller does: the topic
// comes into being only after the brokers have answered `unknown` to
// hidden metadata requests that ask for it, and is listed from the next
// (never, if hidden is negative).
type lateTopic struct {
	cluster *kfake.Cluster
	cfg     config.Kafka
	asked   atomic.Int32 // metadata requests that asked for the topic
	// stall holds every answer about the topic after the first this long
	// (set before use).
	stall time.Duration
}

func newLateTopic(t *testing.T, topic string, hidden int32) *lateTopic {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	l := &lateTopic{cluster: c, cfg: config.Kafka{Brokers: c.ListenAddrs(), Partitions: 2, ReplicationFactor: 1}}
	l.cfg.Topics = config.Topics{Events: "e", Invalid: "i", Segments: "s", Predictions: "p", State: "st", Seeds: "late-seeds", Activations: "a"}

	// The controller's acknowledgement, with nothing created.
	c.ControlKey(int16(kmsg.CreateTopics), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.CreateTopicsRequest)
		if len(req.Topics) != 1 || req.Topics[0].Topic != topic {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
		rt := kmsg.NewCreateTopicsResponseTopic()
		rt.Topic = topic
		rt.NumPartitions = req.Topics[0].NumPartitions
		rt.ReplicationFactor = req.Topics[0].ReplicationFactor
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	// The brokers: the cluster answers metadata as usual, and so says the
	// topic is unknown until it exists.
	c.ControlKey(int16(kmsg.Metadata), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		for _, rt := range kreq.(*kmsg.MetadataRequest).Topics {
			if rt.Topic == nil || *rt.Topic != topic {
				continue
			}
			n := l.asked.Add(1)
			if n > 1 && l.stall > 0 {
				time.Sleep(l.stall)
			}
			if n == hidden+1 {
				// Created now, before this request is answered: kfake
				// runs a control function on its own goroutine and
				// serves CreateTopic while waiting for it. (Created from
				// a goroutine started at request hidden, the topic could
				// exist before that request's answer.)
				if err := c.CreateTopic(topic, 2, nil); err != nil {
					t.Errorf("cannot create %s: %v", topic, err)
				}
			}
		}
		return nil, nil, false
	})
	return l
}

// client is a client of l's cluster, closed when the test ends.
func (l *lateTopic) client(t *testing.T) *kgo.Client {
	t.Helper()
	cl, err := NewClient(l.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestEnsureTopicsWaitsUntilListed: EnsureTopics returns only once the
// brokers list a topic the controller has acknowledged, not as soon as the
// creation is acknowledged.
func TestEnsureTopicsWaitsUntilListed(t *testing.T) {
	const hidden = 3
	l := newLateTopic(t, "late-seeds", hidden)
	cl := l.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := EnsureTopics(ctx, cl, l.cfg); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("EnsureTopics returned after %v and %d metadata requests for the late topic", took, l.asked.Load())
	if n := l.asked.Load(); n <= hidden {
		t.Fatalf("EnsureTopics returned after %d metadata requests for the late topic; the brokers listed it only from request %d on", n, hidden+1)
	}
	if l.cluster.TopicInfo("late-seeds") == nil {
		t.Fatal("EnsureTopics returned before the late topic existed")
	}
	// The brokers list the topic tens of milliseconds after the first ask;
	// polls answered from the client's metadata cache come 5 s apart.
	if took > 5*time.Second {
		t.Errorf("EnsureTopics took %v to see a topic listed from the %dth ask on", took, hidden+1)
	}
	// Every topic is usable at once, the late one too.
	for _, name := range []string{"e", "late-seeds"} {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: name, Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatalf("produce to %s right after EnsureTopics: %v", name, err)
		}
	}
}

// TestEnsureTopicsGivesUp: when the brokers never list an acknowledged
// topic, EnsureTopics returns once its context ends, with an error naming
// the topic and the context's.
//
// With the brokers' answers stalled after the first, the deadline ends
// EnsureTopics in the middle of a request: the error still names the topic
// the last answer lacked, not only the cut request's.
func TestEnsureTopicsGivesUp(t *testing.T) {
	for _, stall := range []time.Duration{0, time.Second} {
		l := newLateTopic(t, "late-seeds", -1)
		l.stall = stall
		cl := l.client(t)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := EnsureTopics(ctx, cl, l.cfg)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("stall %s: EnsureTopics gave up %v after its context's 500ms deadline", stall, took)
		}
		if err == nil {
			t.Fatalf("stall %s: EnsureTopics succeeded; the brokers never listed topic late-seeds", stall)
		}
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "late-seeds: UNKNOWN_TOPIC_OR_PARTITION") {
			t.Fatalf("stall %s: EnsureTopics: %v; want an error that names topic late-seeds as unknown and wraps the context's", stall, err)
		}
		t.Log(err)
	}
}

// unlisted names every topic the metadata lacks or reports in error, on
// one line, and keeps each cause for errors.Is.
func TestUnlisted(t *testing.T) {
	resp := kmsg.NewPtrMetadataResponse()
	for name, code := range map[string]int16{"ok": 0, "bad": kerr.UnknownTopicOrPartition.Code} {
		rt := kmsg.NewMetadataResponseTopic()
		rt.Topic, rt.ErrorCode = kmsg.StringPtr(name), code
		resp.Topics = append(resp.Topics, rt)
	}
	if err := unlisted(resp, []string{"ok"}); err != nil {
		t.Fatalf("all listed: %v", err)
	}
	err := unlisted(resp, []string{"ok", "bad", "gone"})
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err %q: want one line", err)
	}
	if !strings.Contains(err.Error(), "bad: UNKNOWN_TOPIC_OR_PARTITION") || !strings.Contains(err.Error(), "gone: not listed") || strings.Contains(err.Error(), "ok") {
		t.Errorf("err %q: want bad and gone named, ok not", err)
	}
	if !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Errorf("err %q does not wrap UNKNOWN_TOPIC_OR_PARTITION", err)
	}
}

// TestGroupOpts: a client joined with GroupOpts has Pulse's session
// timeout, not the clients' 45 s: a crashed destinations process or
// history writer holds its partitions 10 s.
func TestGroupOpts(t *testing.T) {
	cl, err := kgo.NewClient(append(GroupOpts("g"), kgo.SeedBrokers("127.0.0.1:1"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if got := cl.OptValue(kgo.SessionTimeout); got != GroupSessionTimeout {
		t.Fatalf("session timeout %v, want %v", got, GroupSessionTimeout)
	}
	if got := cl.OptValue(kgo.ConsumerGroup); got != "g" {
		t.Fatalf("group %v, want g", got)
	}
}

// Every client fetches without a fetch session (NewClient's doc: franz-go's
// Close raced with a fetch recording its partitions in the session), also
// when the caller gives options of its own.
func TestNoFetchSessions(t *testing.T) {
	cl, err := NewClient(config.Kafka{Brokers: []string{"127.0.0.1:1"}}, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"t": {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if v := cl.OptValue(kgo.DisableFetchSessions); v != true {
		t.Fatalf("DisableFetchSessions: %v, want true", v)
	}
}
