package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/deletion"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

const deleteUsage = `usage:
  pulse delete [-config FILE] [-kind KIND] [-file FILE|-] [-suppress] [-wait DURATION] [ID]...
      delete people on request (GDPR, CCPA), as DELETE /v1/profiles does for one:
      a forget request per id to the identity requests topic, which the stream's
      linker carries out; beside a running pulse dev without -config. Prints each
      id's request id (GET /v1/deletions/{request_id} follows it); -wait waits
      until every deletion is done
`

// runDelete is `pulse delete`: deletion requests in bulk, straight to
// Kafka (docs/identity.md, "Deleting a person").
func runDelete(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("delete", flag.ExitOnError)
	fl.Usage = func() { fmt.Fprint(os.Stderr, deleteUsage); fl.PrintDefaults() }
	path := fl.String("config", "", "the config of the Pulse to delete from (default: the pulse dev running on ./pulse-data)")
	kind := fl.String("kind", identity.KindUser, "the ids' kind: user_id (tried as an anonymousId too when no profile holds it), anonymous_id, or a trait identifier's (email)")
	file := fl.String("file", "", "read the ids from FILE, one a line (- for standard input), besides those given as arguments")
	suppress := fl.Bool("suppress", false, "suppress the people's entity ids too: ingest drops their later events")
	wait := fl.Duration("wait", 0, "wait up to this long for every deletion to be done (stream, history and ClickHouse's mutations), printing each one's state; fail if one is not")
	fl.Parse(args)
	cfg, _, err := loadBeside(*path)
	if err != nil {
		return err
	}
	if !cfg.Identity.On() {
		return errors.New("identity.enabled is false: a deletion is carried out by the identity linker")
	}
	o := identity.FromConfig(cfg.Identity)
	if kinds := o.Kinds(); !slices.Contains(kinds, *kind) {
		return fmt.Errorf("-kind: unknown identifier kind %q (want %s)", *kind, strings.Join(kinds, ", "))
	}
	ids := fl.Args()
	if *file != "" {
		var r io.Reader = os.Stdin
		if *file != "-" {
			f, err := os.Open(*file)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if id := strings.TrimSpace(sc.Text()); id != "" {
				ids = append(ids, id)
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("-file: %w", err)
		}
	}
	if len(ids) == 0 {
		return errors.New("no ids: give them as arguments or with -file")
	}
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if cfg.Kafka.CreateTopics == nil || *cfg.Kafka.CreateTopics {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := kafka.EnsureTopics(tctx, cl, cfg.Kafka)
		cancel()
		if err != nil {
			return fmt.Errorf("cannot create the topics: %w", err)
		}
	}
	now := time.Now().UTC()
	recs := make([]*kgo.Record, len(ids))
	reqs := make([]identity.Request, len(ids))
	for i, id := range ids {
		reqs[i] = identity.Forget(identity.Identifier{Kind: *kind, Value: id}, now, "delete-"+uuid.NewString())
		reqs[i].Suppress = *suppress
		v, err := identity.EncodeRequest(reqs[i])
		if err != nil {
			return err
		}
		recs[i] = &kgo.Record{Topic: cfg.Kafka.Topics.IdentityRequests, Key: []byte(id), Value: v}
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(pctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("cannot write the deletion requests to Kafka (%s): %w; send them again (deleting twice is harmless)", strings.Join(cfg.Kafka.Brokers, ","), err)
	}
	if topic := cfg.Kafka.Topics.Deletions; topic != "" {
		// Their progress's first records (the linker's repeat them).
		asked := make([]*kgo.Record, len(reqs))
		for i, q := range reqs {
			r := deletion.Record{Request: q.MessageID, Stage: deletion.Requested, At: now, RequestedAt: now, Kind: q.To.Kind, Suppress: q.Suppress}
			asked[i] = &kgo.Record{Topic: topic, Key: r.Key(), Value: r.Encode()}
		}
		if err := cl.ProduceSync(pctx, asked...).FirstErr(); err != nil {
			fmt.Fprintf(os.Stderr, "warning: cannot record the requests' progress on %s (the linker records it as it carries them out): %v\n", topic, err)
		}
	}
	// With -wait, standard output has the states at the end; the ids go
	// to standard error at once, kept if the wait fails.
	out := os.Stdout
	if *wait > 0 {
		out = os.Stderr
	}
	for _, q := range reqs {
		fmt.Fprintf(out, "%s\t%s\n", q.To, q.MessageID)
	}
	fmt.Fprintf(os.Stderr, "%d deletion requests written to %s; the stream carries them out (pulse_identity_forgotten_total)\n", len(reqs), cfg.Kafka.Topics.IdentityRequests)
	if *wait > 0 {
		return waitDeleted(ctx, cfg, reqs, *wait)
	}
	return nil
}

// waitDeleted follows the deletions topic until every request of reqs is
// done (ClickHouse's mutations included, where a history is configured),
// or d passes; it prints each request's state and fails when one is not
// done.
func waitDeleted(ctx context.Context, cfg *config.Config, reqs []identity.Request, d time.Duration) error {
	if cfg.Kafka.Topics.Deletions == "" {
		return errors.New("-wait: kafka.topics.deletions is not set: no progress to follow")
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	withHistory := cfg.ClickHouse.Addr != ""
	var reader *history.Reader
	if withHistory {
		conn, err := history.Open(cfg.ClickHouse)
		if err != nil {
			return fmt.Errorf("-wait: %w", err)
		}
		defer conn.Close()
		reader = history.NewReader(conn, cfg.ClickHouse.Database)
	}
	tab := deletion.NewTable()
	statuses := func() []deletion.Status {
		out := make([]deletion.Status, len(reqs))
		for i, q := range reqs {
			out[i], _ = tab.Status(q.MessageID, withHistory)
			out[i].RequestID = q.MessageID
		}
		return out
	}
	var ss []deletion.Status
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	err := kafka.Follow(fctx, cfg.Kafka, cfg.Kafka.Topics.Deletions, slog.Default(), func(fs kgo.Fetches) {
		fs.EachRecord(func(r *kgo.Record) {
			if rec, err := deletion.Decode(r.Value); err == nil {
				tab.Add(rec)
			}
		})
		if ss = statuses(); allDone(ss) {
			stop()
		}
	})
	if err != nil {
		return err
	}
	// The history's rows go as ClickHouse runs the mutations.
	if reader != nil && allDone(ss) {
		if ss, err = waitMutations(ctx, reader, statuses); err != nil {
			return fmt.Errorf("-wait: %w", err)
		}
	}
	if ss == nil {
		ss = statuses()
	}
	var left int
	for i, s := range ss {
		fmt.Printf("%s\t%s\t%s\n", reqs[i].To, s.RequestID, s.State)
		if s.State != deletion.StateDone {
			left++
		}
	}
	if left > 0 {
		return fmt.Errorf("-wait: %d of %d deletions not done within %s (GET /v1/deletions/{request_id} says which stage waits)", left, len(reqs), d)
	}
	return nil
}

func allDone(ss []deletion.Status) bool {
	for _, s := range ss {
		if s.State != deletion.StateDone {
			return false
		}
	}
	return true
}

// waitMutations asks ClickHouse until no mutation issued before the
// deletions' last history parts runs, then gives the states; when ctx ends
// first, each history stage counts as not done (its rows' deletion was
// not seen to finish).
func waitMutations(ctx context.Context, reader *history.Reader, statuses func() []deletion.Status) ([]deletion.Status, error) {
	for {
		oldest, err := reader.OldestRunningMutation(ctx)
		if err == nil {
			ss := statuses()
			for i := range ss {
				ss[i].SettleMutations(oldest)
			}
			if allDone(ss) {
				return ss, nil
			}
		} else if ctx.Err() == nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			ss := statuses()
			for i := range ss {
				if h := ss[i].History; h != nil {
					ss[i].SettleMutations(h.At)
				}
			}
			return ss, nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}
