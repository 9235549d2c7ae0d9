package kafka

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Follow reads every partition of topic from its start, read_committed,
// with no consumer group (each process holds the whole table: a compacted
// topic's latest record per key), and hands each fetch to each until ctx
// ends, when it returns nil. Fetch errors are logged to log and retried
// by the client.
func Follow(ctx context.Context, c config.Kafka, topic string, log *slog.Logger, each func(kgo.Fetches)) error {
	cl, err := NewClient(c,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				log.Warn("fetch failed", "topic", t, "partition", p, "err", err)
			}
		})
		each(fs)
	}
}
