package destination

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka copies each change's record (JSON, as on the topic: a
// segment.Record, or a trait change's model.TraitScore) to Topic, on its
// own client (another cluster, or Pulse's): keyed by entity id, so one
// entity's changes stay in order in one partition, with the idempotency
// key in the header pulse-change-id and the kind (segment or trait) in
// pulse-kind. The topic must exist, or the cluster create topics on
// first write.
type Kafka struct {
	Client *kgo.Client // a producer (kafka.ProducerOpts); the caller closes it
	Topic  string
}

// The Kafka headers of each copied record.
const (
	ChangeIDHeader  = "pulse-change-id" // the idempotency key
	KindHeaderKafka = "pulse-kind"      // segment or trait
)

// Deliver implements Sink.
func (k *Kafka) Deliver(ctx context.Context, batch []Change) []Failure {
	recs := make([]*kgo.Record, len(batch))
	for i := range batch {
		c := &batch[i]
		recs[i] = &kgo.Record{
			Topic: k.Topic, Key: []byte(c.EntityID), Value: c.Raw,
			Headers: []kgo.RecordHeader{{Key: ChangeIDHeader, Value: []byte(c.Key())}, {Key: KindHeaderKafka, Value: []byte(kindOf(c))}},
		}
	}
	index := make(map[*kgo.Record]int, len(recs))
	for i, r := range recs {
		index[r] = i
	}
	var fails []Failure
	// Results come in completion order, not the records'.
	for _, res := range k.Client.ProduceSync(ctx, recs...) {
		if res.Err != nil {
			fails = append(fails, Failure{Index: index[res.Record], Err: res.Err, Retryable: kerr.IsRetriable(res.Err) || !isKafkaError(res.Err)})
		}
	}
	return fails
}

// kindOf is c's kind, segment when unset.
func kindOf(c *Change) string {
	if c.Kind == "" {
		return KindSegment
	}
	return c.Kind
}

// isKafkaError reports whether err is the broker's answer (rather than a
// client-side timeout or connection failure, which a retry may cure).
func isKafkaError(err error) bool {
	var ke *kerr.Error
	return errors.As(err, &ke)
}
