package kafka

import (
	"context"
	"fmt"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/rfm"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The RFM topic (kafka.topics.rfm, default pulse.rfm, compacted; all on
// partition 0) carries two kinds of record, written by the stream
// (stream/rfm_topic.go):
//
//	summary/<p>  rfm.Summary of events partition p, by its task, every refresh
//	boundaries   rfm.Boundaries, by the task of partition 0, with the next version
const (
	RFMBoundariesKey = "boundaries"
	RFMSummaryPrefix = "summary/"
)

// NewestRFMBoundaries reads the RFM topic from its start to its end
// (read_committed) and returns the newest boundaries it holds (the one
// every stream task settles on: rfm.Boundaries.Newer), or nil when it
// holds none. Undecodable records are skipped. ctx bounds the read.
func NewestRFMBoundaries(ctx context.Context, c config.Kafka, opts ...kgo.Opt) (*rfm.Boundaries, error) {
	topic := c.Topics.RFM
	cl, err := NewClient(c, append([]kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("cannot list end offsets of %s: %w", topic, err)
	}
	o, ok := ends.Lookup(topic, 0)
	if !ok || o.Err != nil {
		return nil, fmt.Errorf("cannot list the end offset of %s: %v", topic, o.Err)
	}
	var newest *rfm.Boundaries
	// Compaction leaves gaps in the offsets but never removes the
	// last record: reading up to the end offset reads everything.
	for next := int64(0); next < o.Offset; {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("cannot read %s to its end (offset %d of %d): %w", topic, next, o.Offset, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return nil, fmt.Errorf("cannot read %s: %w", topic, ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			next = r.Offset + 1
			if string(r.Key) != RFMBoundariesKey || r.Value == nil {
				return
			}
			if b, err := rfm.DecodeBoundaries(r.Value); err == nil && b.Newer(newest) {
				newest = b
			}
		})
	}
	return newest, nil
}
