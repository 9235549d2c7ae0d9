package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/identity"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadLinks reads the identity table (c.Topics.Identity) from its start,
// read_committed, in each partition's log order: what backfill verify
// resolves people with (identity.RestoreMemStore). The linker's own
// records (keys starting with "__") are skipped. It returns once a poll
// brings nothing for idle after the last records (transaction markers
// hold offsets but are never delivered, so the end offset cannot tell).
func ReadLinks(ctx context.Context, c config.Kafka, idle time.Duration, opts ...kgo.Opt) ([]identity.Link, error) {
	topic := c.Topics.Identity
	cl, err := NewClient(c, append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("cannot list end offsets of %s: %w", topic, err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	var links []identity.Link
	for total > 0 {
		pctx, cancel := context.WithTimeout(ctx, idle)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if fs.NumRecords() == 0 {
			break
		}
		var derr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				derr = err
			}
		})
		if derr != nil {
			return nil, fmt.Errorf("cannot read %s: %w", topic, derr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if strings.HasPrefix(string(r.Key), "__") || derr != nil {
				return
			}
			l, err := identity.DecodeLink(r.Value)
			if err != nil {
				derr = fmt.Errorf("%s/%d offset %d: %w", topic, r.Partition, r.Offset, err)
				return
			}
			links = append(links, l)
		})
		if derr != nil {
			return nil, derr
		}
	}
	return links, nil
}
