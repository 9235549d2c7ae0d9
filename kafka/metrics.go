package kafka

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// produceRequestSeconds splits a produce request's round trip, so that a
// slow acknowledgement can be told apart: waiting for the connection (the
// idempotent producer keeps at most 5 requests in flight per broker, and a
// broker answers one connection's requests one at a time), writing, or the
// broker's answer.
var produceRequestSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
	Name: "pulse_kafka_produce_request_seconds",
	Help: "Produce requests to the brokers, by stage: queued (built, waiting to be written), write (writing it), " +
		"response (written until its response was read: the broker's time, the network, and this process's scheduling).",
	Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
}, []string{"stage"})

// mReachable is set by every producer's Reachability.
var mReachable = promauto.NewGauge(prometheus.GaugeOpts{
	Name: "pulse_kafka_reachable",
	Help: "0 while a producer's last dial to every broker it uses failed (ingest answers 503 at once), 1 otherwise.",
})

func init() { mReachable.Set(1) }

// produceHook observes every produce request's stages; franz-go calls it
// once per request (hundreds a second under load, not once per record).
type produceHook struct{ queued, write, response prometheus.Observer }

func newProduceHook() produceHook {
	return produceHook{
		queued:   produceRequestSeconds.WithLabelValues("queued"),
		write:    produceRequestSeconds.WithLabelValues("write"),
		response: produceRequestSeconds.WithLabelValues("response"),
	}
}

func (h produceHook) OnBrokerE2E(_ kgo.BrokerMetadata, key int16, e kgo.BrokerE2E) {
	if kmsg.Key(key) != kmsg.Produce || e.Err() != nil {
		return
	}
	h.queued.Observe(e.WriteWait.Seconds())
	h.write.Observe(e.TimeToWrite.Seconds())
	h.response.Observe((e.ReadWait + e.TimeToRead).Seconds())
}
