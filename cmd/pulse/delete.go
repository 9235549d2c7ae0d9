package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

const deleteUsage = `usage:
  pulse delete [-config FILE] [-kind KIND] [-file FILE|-] [-suppress] [ID]...
      delete people on request (GDPR, CCPA), as DELETE /v1/profiles does for one:
      a forget request per id to the identity requests topic, which the stream's
      linker carries out; beside a running pulse dev without -config
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
	for _, q := range reqs {
		fmt.Printf("%s\t%s\n", q.To, q.MessageID)
	}
	fmt.Fprintf(os.Stderr, "%d deletion requests written to %s; the stream carries them out (pulse_identity_forgotten_total)\n", len(reqs), cfg.Kafka.Topics.IdentityRequests)
	return nil
}
