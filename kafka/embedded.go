package kafka

import (
	"fmt"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Embedded is an in-process Kafka (franz-go's kfake) for `pulse dev` and
// fast tests. It speaks the Kafka protocol on 127.0.0.1, so kcat and any
// other client can produce to it.
//
// Its broker default for retention.ms is -1 (never), not Kafka's week:
// kfake applies retention.ms to every topic, the compacted ones included,
// where Kafka applies it only to topics whose cleanup.policy has
// "delete". With the week, `pulse dev` lost every key of its compacted
// topics not written again within a week (the people suppressed, the
// deletions' audit, identity links, the stream's changelog) at kfake's
// next hourly cleaning. The topics that expire records get their
// retention.ms from kafka.retention (EnsureTopics), which `pulse dev`
// sets to a week when the config leaves it to the broker.
type Embedded struct {
	cluster *kfake.Cluster
}

// EmbeddedOptions configure StartEmbedded.
type EmbeddedOptions struct {
	// Port to listen on, on 127.0.0.1; 0 picks a free one.
	Port int
	// DataDir keeps the log across restarts; "" keeps it in memory.
	DataDir string
	// Partitions is the default for auto-created topics. Default 4.
	Partitions int
}

// StartEmbedded starts the in-process broker.
func StartEmbedded(o EmbeddedOptions) (*Embedded, error) {
	if o.Partitions == 0 {
		o.Partitions = 4
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(o.Port),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(o.Partitions),
		kfake.ClusterID("pulse-dev"),
		kfake.BrokerConfigs(map[string]string{"log.retention.ms": "-1"}),
	}
	if o.DataDir != "" {
		opts = append(opts, kfake.DataDir(o.DataDir))
	}
	if o.Port != 0 {
		// kfake would fail deep inside; say plainly that the port is taken.
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.Port)))
		if err != nil {
			return nil, fmt.Errorf("cannot start embedded kafka: port %d is in use (is another `pulse dev` or a Kafka running?): %w", o.Port, err)
		}
		ln.Close()
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot start embedded kafka: %w", err)
	}
	return &Embedded{cluster: c}, nil
}

// Addrs are the broker addresses to give clients.
func (e *Embedded) Addrs() []string { return e.cluster.ListenAddrs() }

// Cluster exposes kfake for fault injection in tests.
func (e *Embedded) Cluster() *kfake.Cluster { return e.cluster }

// Close stops the broker, flushing the log to DataDir.
func (e *Embedded) Close() { e.cluster.Close() }
