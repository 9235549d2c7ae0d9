package stream

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/rfm"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The RFM topic (kafka.topics.rfm, default pulse.rfm, compacted; all on
// partition 0) carries two kinds of record:
//
//	summary/<p>  rfm.Summary of events partition p, by its task, every refresh
//	boundaries   rfm.Boundaries, by the task of partition 0, every refresh
//	             when the merged cuts changed, with the next version
//
// Every processor reads the topic from its start (read_committed) before
// it joins the group and then follows it, so every task scores with the
// version last published: the boundaries are computed once, from every
// partition's summary, and never by a task from its own partition alone.
//
// Versions only go up: a processor takes a boundaries record only when it
// is newer than what it has (rfm.Boundaries.Newer), so its own later
// publication is never taken back by the topic's older records. Caveat:
// during a rebalance two processors may both hold partition 0 for a moment
// and publish the same version each; the one published later (At) wins
// everywhere once both are read.

// The keys are kafka.RFMBoundariesKey and kafka.RFMSummaryPrefix: `pulse
// backfill verify` reads the boundaries too (kafka.NewestRFMBoundaries).
const (
	rfmBoundariesKey = kafka.RFMBoundariesKey
	rfmSummaryPrefix = kafka.RFMSummaryPrefix
)

// rfmState is the processor's view of the RFM topic.
type rfmState struct {
	mu   sync.Mutex
	sums map[int32]*rfm.Summary
	// cl is set by Run and read by the tasks' timers; nil in the
	// tester: publications stay in memory.
	cl atomic.Pointer[kgo.Client]
}

func (p *Processor) setSummary(s *rfm.Summary) {
	p.rfmTopic.mu.Lock()
	defer p.rfmTopic.mu.Unlock()
	if p.rfmTopic.sums == nil {
		p.rfmTopic.sums = map[int32]*rfm.Summary{}
	}
	p.rfmTopic.sums[s.Partition] = s
}

func (p *Processor) summaries() []*rfm.Summary {
	p.rfmTopic.mu.Lock()
	defer p.rfmTopic.mu.Unlock()
	out := make([]*rfm.Summary, 0, len(p.rfmTopic.sums))
	for _, s := range p.rfmTopic.sums {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out
}

// applyRFMRecord takes one record of the RFM topic.
func (p *Processor) applyRFMRecord(r *kgo.Record) {
	k := string(r.Key)
	switch {
	case k == rfmBoundariesKey && r.Value != nil:
		b, err := rfm.DecodeBoundaries(r.Value)
		if err != nil {
			p.log.Warn("ignoring an undecodable rfm boundaries record", "offset", r.Offset, "err", err)
			return
		}
		p.offerBoundaries(b)
	case strings.HasPrefix(k, rfmSummaryPrefix) && r.Value != nil:
		s, err := rfm.DecodeSummary(r.Value)
		if err != nil {
			p.log.Warn("ignoring an undecodable rfm summary record", "offset", r.Offset, "err", err)
			return
		}
		p.setSummary(s)
	}
}

// startRFM opens the RFM topic's client, reads the topic to its end and
// follows it until ctx ends.
func (p *Processor) startRFM(ctx context.Context) error {
	if p.rfm == nil {
		return nil
	}
	topic := p.cfg.Kafka.Topics.RFM
	cl, err := kafka.NewClient(p.cfg.Kafka, append(append(kafka.ProducerOpts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	), p.opts.KafkaOpts...)...)
	if err != nil {
		return err
	}
	p.rfmTopic.cl.Store(cl)
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		cl.Close()
		return fmt.Errorf("cannot list end offsets of %s: %w", topic, err)
	}
	end := int64(0)
	if o, ok := ends.Lookup(topic, 0); ok && o.Err == nil {
		end = o.Offset
	}
	catchUp, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for next := int64(0); next < end && catchUp.Err() == nil; {
		cl.PollFetches(catchUp).EachRecord(func(r *kgo.Record) {
			p.applyRFMRecord(r)
			next = r.Offset + 1
		})
	}
	if ctx.Err() != nil {
		cl.Close()
		return ctx.Err()
	}
	if catchUp.Err() != nil {
		p.log.Warn("rfm topic not read to its end in 30s; following it from where the read stopped", "topic", topic)
	}
	go func() {
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(p.applyRFMRecord)
		}
	}()
	return nil
}

// publishRFM publishes, every refresh, the partition's summary and, from
// partition 0, the boundaries merged from every partition's latest
// summary when they changed.
func (t *task) publishRFM(ctx context.Context, now time.Time) error {
	if now.Before(t.rfmNextPublish) {
		return nil
	}
	t.rfmNextPublish = now.Add(t.p.rfm.refresh)
	s, err := t.summary(now)
	if err != nil {
		return err
	}
	t.p.setSummary(s)
	if err := t.p.produceRFM(ctx, rfmSummaryPrefix+fmt.Sprint(t.partition), s.Encode()); err != nil {
		return err
	}
	if t.partition != 0 {
		return nil
	}
	return t.p.publishBoundaries(ctx, now)
}

// publishBoundaries merges the known summaries into the next version of
// the boundaries and publishes it, unless the cuts are the same.
func (p *Processor) publishBoundaries(ctx context.Context, now time.Time) error {
	cur := p.rfmLatest.Load()
	var version int64 = 1
	if cur != nil {
		version = cur.Version + 1
	}
	b := rfm.Merge(p.summaries(), p.rfm.scores, version, now.UTC())
	if !b.Usable() || b.SameCuts(cur) {
		return nil
	}
	if err := p.produceRFM(ctx, rfmBoundariesKey, b.Encode()); err != nil {
		return err
	}
	p.offerBoundaries(b)
	mRFMPublished.Inc()
	p.log.Info("rfm boundaries published", "version", b.Version, "buyers", b.Buyers, "r", b.R, "f", b.F, "m", b.M)
	return nil
}

func (p *Processor) produceRFM(ctx context.Context, k string, v []byte) error {
	cl := p.rfmTopic.cl.Load()
	if cl == nil {
		return nil
	}
	r := &kgo.Record{Topic: p.cfg.Kafka.Topics.RFM, Partition: 0, Key: []byte(k), Value: v}
	if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("cannot publish %s on %s: %w", k, r.Topic, err)
	}
	return nil
}

// offerBoundaries makes b the latest boundaries when it is newer than
// them (rfm.Boundaries.Newer): the topic's records may arrive after the
// processor's own publication of a later version, and must not take it
// back.
func (p *Processor) offerBoundaries(b *rfm.Boundaries) {
	for {
		cur := p.rfmLatest.Load()
		if !b.Newer(cur) || p.rfmLatest.CompareAndSwap(cur, b) {
			return
		}
	}
}
