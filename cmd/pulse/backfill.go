package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/backfill"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/internal/system"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/rfm"
)

const backfillUsage = `pulse backfill — replay the ClickHouse history through the feature definitions

Usage:
  pulse backfill features [-config FILE] [-feature NAME]... [-since T] [-entity ID]... [-direct]
  pulse backfill training-set [-config FILE] (-labels FILE | -labels-query SQL) -features a,b,c (-out FILE.csv | -table T)
  pulse backfill predict [-config FILE] -model NAME [-entity ID]... [-at T] (-out FILE.csv | -table T)
  pulse backfill verify [-config FILE] [-sample N] [-feature NAME]... [-entity ID]...

Times (T) are ISO-8601 or epoch milliseconds. Progress goes to stderr.

backfill features seeds the running stream: for features it started counting
after some events (added to the config), it sends the history before that
point to pulse.seeds, and the stream merges it into its state once and
writes the vectors; each entity is seeded once per feature (so with -since,
only from T on). -direct writes vectors straight to the online store
instead, for setups with no stream (a running stream would overwrite them).
`

// runBackfill is `pulse backfill SUBCOMMAND`.
func runBackfill(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stderr, backfillUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "features":
		return backfillFeatures(ctx, args)
	case "training-set":
		return backfillTrainingSet(ctx, args)
	case "predict":
		return backfillPredict(ctx, args)
	case "verify":
		return backfillVerify(ctx, args)
	}
	return fmt.Errorf("unknown backfill command %q\n\n%s", sub, backfillUsage)
}

// listFlag collects a repeatable flag; commas also separate values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// timeFlag is an optional time.
type timeFlag struct{ t time.Time }

func (f *timeFlag) String() string {
	if f.t.IsZero() {
		return ""
	}
	return f.t.Format(time.RFC3339Nano)
}
func (f *timeFlag) Set(s string) error {
	t, err := history.ParseTime(s)
	f.t = t
	return err
}

// backfillCmd is a backfill subcommand's flags: -config, and -out and
// -table for one that writes rows (given tableHelp).
type backfillCmd struct {
	*command
	out, table string
	dev        *system.DevState // the pulse dev running beside, if any
}

func newBackfillCmd(name, tableHelp string) *backfillCmd {
	c := &backfillCmd{command: newCommand("backfill "+name, "")}
	if tableHelp != "" {
		c.StringVar(&c.out, "out", "", "output CSV file (- for stdout)")
		c.StringVar(&c.table, "table", "", tableHelp)
	}
	return c
}

// open checks that a command that writes rows got one of -out and -table,
// then loads the config (beside a running `pulse dev`: its config and its
// ClickHouse) and connects to its ClickHouse, failing at once, naming it,
// when it does not answer.
func (c *backfillCmd) open(ctx context.Context) (*config.Config, *history.Reader, func(), error) {
	if c.Lookup("table") != nil && (c.out == "") == (c.table == "") {
		return nil, nil, nil, errors.New("give one of -out FILE and -table T")
	}
	cfg, st, err := loadBeside(c.config)
	if err != nil {
		return nil, nil, nil, err
	}
	c.dev = st
	conn, err := history.Open(cfg.ClickHouse)
	if errors.Is(err, history.ErrDisabled) {
		where := "the embedded example config"
		if c.config != "" {
			where = c.config
		}
		return nil, nil, nil, fmt.Errorf("%w in %s, and no pulse dev runs on %s: start `pulse dev` in this directory (it keeps the history in a local ClickHouse when clickhouse-server is installed), or set clickhouse.addr and pass -config", err, where, cfg.DataDir)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if err := history.Ping(ctx, conn); err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("cannot backfill: the history's ClickHouse at %s does not answer (backfills read it; start it, or wait for it, and run again): %w", cfg.ClickHouse.Addr, err)
	}
	return cfg, history.NewReader(conn, cfg.ClickHouse.Database), func() { conn.Close() }, nil
}

func backfillFeatures(ctx context.Context, args []string) error {
	fl := newBackfillCmd("features", "")
	var features, entities listFlag
	var since timeFlag
	fl.Var(&features, "feature", "feature to write (repeatable; default all user features)")
	fl.Var(&entities, "entity", "entity id to backfill (repeatable; default all)")
	fl.Var(&since, "since", "replay events from this time on (windows reaching earlier count partly)")
	direct := fl.Bool("direct", false, "write vectors to the online store instead of seeding the stream (no stream runs)")
	historyGroup := fl.String("history-group", kafka.HistoryGroup, "the history writer's consumer group (how far ClickHouse holds the events)")
	fl.Parse(args)
	cfg, r, closeFn, err := fl.open(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	if !*direct {
		rep, err := backfill.Seeds(ctx, cfg, r, backfill.SeedsOptions{Features: features, Since: since.t, Entities: entities,
			HistoryGroup: *historyGroup, Progress: os.Stderr})
		if err != nil {
			return err
		}
		if rep.Seeds == 0 && rep.Events == 0 {
			fmt.Printf("nothing to seed: the stream counted %s from the first offset of every partition\n", featureList(rep.Features))
			return nil
		}
		fmt.Printf("sent %d seeds (%d events, %d partitions) for %s in %s; the stream merges them and writes the vectors (pulse_stream_seeds_total)\n",
			rep.Seeds, rep.Events, rep.PartitionsSeeded, featureList(rep.Features), rep.Elapsed.Round(time.Millisecond))
		return nil
	}
	store, err := featurestore.OpenWriter(cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	rep, err := backfill.Features(ctx, cfg, r, store, backfill.FeaturesOptions{Features: features, Since: since.t, Entities: entities, Progress: os.Stderr})
	if err != nil {
		return err
	}
	fmt.Printf("wrote %d entities from %d events in %s (%.0f events/s)\n", rep.Entities, rep.Events, rep.Elapsed.Round(time.Millisecond), float64(rep.Events)/rep.Elapsed.Seconds())
	return nil
}

func backfillTrainingSet(ctx context.Context, args []string) error {
	fl := newBackfillCmd("training-set", "output ClickHouse table (db.table, or a table in the history database)")
	labelsFile := fl.String("labels", "", "labels CSV: entity_id,timestamp,label")
	labelsQuery := fl.String("labels-query", "", "SQL on the history database returning entity_id, timestamp, label")
	var features listFlag
	fl.Var(&features, "features", "features, comma-separated, in output order")
	fl.Parse(args)
	if (*labelsFile == "") == (*labelsQuery == "") {
		return errors.New("give one of -labels FILE and -labels-query SQL")
	}
	cfg, r, closeFn, err := fl.open(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	var labels []backfill.Label
	if *labelsFile != "" {
		f, err := os.Open(*labelsFile)
		if err != nil {
			return err
		}
		labels, err = backfill.ReadLabelsCSV(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", *labelsFile, err)
		}
	} else if labels, err = backfill.LabelsFromQuery(ctx, r, *labelsQuery); err != nil {
		return err
	}
	start := time.Now()
	rows, err := backfill.TrainingSet(ctx, cfg, r, labels, features, backfill.TrainingSetOptions{Progress: os.Stderr})
	if err != nil {
		return err
	}
	if fl.table != "" {
		err = rows.WriteTable(ctx, r, fl.table)
	} else {
		err = writeFile(fl.out, rows.WriteCSV)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "training set: %d rows x %d features in %s\n", len(labels), len(features), time.Since(start).Round(time.Millisecond))
	return nil
}

func backfillPredict(ctx context.Context, args []string) error {
	fl := newBackfillCmd("predict", "output ClickHouse table")
	name := fl.String("model", "", "model name from the config")
	var entities listFlag
	var at timeFlag
	fl.Var(&entities, "entity", "entity id to score (repeatable; default every entity in history)")
	fl.Var(&at, "at", "features as of this time (default now)")
	fl.Parse(args)
	if *name == "" {
		return errors.New("-model is required")
	}
	cfg, r, closeFn, err := fl.open(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	if at.t.IsZero() {
		at.t = time.Now()
	}
	opts := backfill.PredictOptions{Entities: entities, At: at.t, Progress: os.Stderr}
	if fl.table != "" {
		var preds []backfill.Prediction
		if err := backfill.Predict(ctx, cfg, r, *name, opts, func(p backfill.Prediction) error { preds = append(preds, p); return nil }); err != nil {
			return err
		}
		return backfill.WritePredictions(ctx, r, fl.table, *name, at.t, preds)
	}
	return writeFile(fl.out, func(w io.Writer) error {
		c := backfill.NewPredictionCSV(w)
		if err := backfill.Predict(ctx, cfg, r, *name, opts, c.Write); err != nil {
			return err
		}
		return c.Flush()
	})
}

func backfillVerify(ctx context.Context, args []string) error {
	fl := newBackfillCmd("verify", "")
	sample := fl.Int("sample", 1000, "entities to check")
	var features, entities listFlag
	fl.Var(&features, "feature", "feature to check (repeatable; default all)")
	fl.Var(&entities, "entity", "entity to check instead of a sample (repeatable)")
	fl.Parse(args)
	cfg, r, closeFn, err := fl.open(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	store, err := verifyStore(cfg, fl.dev)
	if err != nil {
		return err
	}
	defer store.Close()
	opts := backfill.VerifyOptions{Sample: *sample, Features: features, Progress: os.Stderr}
	if len(entities) > 0 {
		opts.Entities = entities
	}
	if opts.RFM, err = verifyBoundaries(ctx, cfg, features); err != nil {
		return err
	}
	rep, err := backfill.Verify(ctx, cfg, r, store, opts)
	if err != nil {
		return err
	}
	rep.Write(os.Stdout)
	if n := rep.Mismatches(); n > 0 {
		return fmt.Errorf("%d mismatching value(s)", n)
	}
	compared := 0
	for _, f := range rep.Features {
		compared += f.Compared
	}
	if compared == 0 {
		return fmt.Errorf("verify compared nothing (%d entities sampled from history, %d not in the online store): is this the store the stream writes (run it where pulse dev runs, or with its -config), has the stream caught up, and does history hold events?", rep.Sampled, len(rep.Missing))
	}
	return nil
}

// verifyBoundaries are the RFM boundaries verify checks the RFM features
// with: the newest on the RFM topic, as the stream scores with them. A
// topic it cannot read, or with none yet, skips the RFM features with a
// note, unless one was asked for by name.
func verifyBoundaries(ctx context.Context, cfg *config.Config, features []string) (*rfm.Boundaries, error) {
	if cfg.RFM == nil {
		return nil, nil
	}
	named := slices.ContainsFunc(features, func(f string) bool { return strings.HasPrefix(f, "rfm_") })
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := kafka.NewestRFMBoundaries(rctx, cfg.Kafka)
	switch {
	case err != nil && named:
		return nil, fmt.Errorf("cannot read the RFM boundaries from %s: %w", cfg.Kafka.Topics.RFM, err)
	case err != nil:
		fmt.Fprintf(os.Stderr, "the RFM features are not checked: cannot read the RFM boundaries from %s: %v\n", cfg.Kafka.Topics.RFM, err)
	case b == nil && !named:
		fmt.Fprintf(os.Stderr, "the RFM features are not checked: no RFM boundaries on %s yet (the stream publishes them every rfm.refresh)\n", cfg.Kafka.Topics.RFM)
	case b != nil:
		fmt.Fprintf(os.Stderr, "checking the RFM features with boundaries version %d of %s\n", b.Version, b.At.Format(time.RFC3339))
	}
	return b, nil
}

// verifyStore is the online store verify reads: through the scorer of a
// pulse dev running beside (which holds Pebble's lock), else the
// configured store, which must exist (opening a missing Pebble store
// would create an empty one and report every entity missing).
func verifyStore(cfg *config.Config, dev *system.DevState) (featurestore.Store, error) {
	if dev != nil && dev.Store != "" {
		key := cfg.KeyWithScope(config.ScopeRead)
		if key == "" {
			return nil, fmt.Errorf("pulse dev holds the online store: verify reads it through the scorer at %s, which needs a key with the read scope in the config", dev.Scorer)
		}
		return featurestore.OpenServed(dev.Scorer, key), nil
	}
	if cfg.Store.Backend != "redis" {
		if _, err := os.Stat(cfg.Store.Path); err != nil {
			return nil, fmt.Errorf("no online store at %s: run verify where pulse dev or pulse stream runs, or pass the -config they use (store.path)", cfg.Store.Path)
		}
	}
	store, err := featurestore.OpenWriter(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w (is a pulse process holding the store? run verify beside pulse dev, which it then reads through the scorer)", err)
	}
	return store, nil
}

// writeFile writes through f to path, or stdout for "-".
func writeFile(path string, f func(io.Writer) error) error {
	if path == "-" {
		return f(os.Stdout)
	}
	file, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f(file); err != nil {
		file.Close()
		return err
	}
	return file.Close()
}

func featureList(names []string) string {
	if len(names) == 0 {
		return "every feature"
	}
	return strings.Join(names, ", ")
}
