package main

import (
	"context"
	"fmt"
	"os"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/importer"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	importEventsUsage = "pulse import events [-config FILE] [-format segment|amplitude|posthog] [-mapping FILE] [-map field=column]... [-report FILE] FILE..."
	importRowsUsage   = "pulse import rows FILE... -feature-set NAME [-id COLUMN] [-config FILE] [-report FILE]"
	importCHUsage     = "pulse import clickhouse -query 'SELECT ...' [-clickhouse HOST:PORT] [-mapping FILE] [-map field=column]... [-report FILE] [-config FILE]"
	importUsage       = importEventsUsage + "\n  " + importRowsUsage + "\n  " + importCHUsage
)

// runImport is `pulse import events FILE...` (CSV, JSON lines, vendors'
// exports) and `pulse import rows FILE...` (feature rows) into pulse.events
// (importer), a summary on stderr; exit code 2 when rows were refused.
// Flags may follow the files.
func runImport(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "events" && args[0] != "rows" && args[0] != "clickhouse" {
		return fmt.Errorf("want:\n  %s\n(docs/import.md)", importUsage)
	}
	what := args[0]
	fl := newCommand("import "+what, "")
	reportPath := fl.String("report", "", "write the refused rows (file, row, column, value, reason) to this CSV file")
	var (
		mappingFile, format, featureSet, idColumn *string
		query, chAddr                             *string
		flags                                     importer.Mapping
	)
	usage := importEventsUsage
	if what != "rows" {
		mappingFile = fl.String("mapping", "", "YAML file of `field: column` lines (docs/import.md)")
		fl.Var(&flags, "map", "field=column, or field=\"constant\" (repeatable; over -mapping)")
		format = fl.String("format", "", "segment, amplitude or posthog: how JSON rows are read (default: by their fields)")
	}
	if what == "clickhouse" {
		usage = importCHUsage
		query = fl.String("query", "", "the ClickHouse query whose rows to import (required)")
		chAddr = fl.String("clickhouse", "", "ClickHouse's native address (default: clickhouse.addr of the config)")
	}
	if what == "rows" {
		usage = importRowsUsage
		featureSet = fl.String("feature-set", "", "the rows' feature set, e.g. user/profile_attributes/5 (required)")
		idColumn = fl.String("id", "id", "the column of the user id")
	}
	files := fl.parseInterspersed(args[1:])
	cfg, _, err := loadBeside(fl.config)
	if err != nil {
		return err
	}
	switch {
	case what == "clickhouse" && *query == "":
		return fmt.Errorf("no query: want %s", usage)
	case what == "clickhouse" && len(files) > 0:
		return fmt.Errorf("pulse import clickhouse reads a query, not files (%v): want %s", files, usage)
	case what != "clickhouse" && len(files) == 0:
		return fmt.Errorf("no file to import: want %s (- reads stdin)", usage)
	}
	o := importer.Options{Events: cfg.Kafka.Topics.Events, Invalid: cfg.Kafka.Topics.Invalid, Progress: os.Stderr}
	if what == "rows" {
		o.Rows = &importer.FeatureRows{FeatureSet: *featureSet, ID: *idColumn}
		if err := o.Rows.Validate(); err != nil {
			return fmt.Errorf("%w\nwant %s", err, usage)
		}
	} else if o.Mapping, o.Format, err = eventsMapping(*mappingFile, flags, *format); err != nil {
		return err
	}
	if st, err := os.Stderr.Stat(); err == nil {
		o.Terminal = st.Mode()&os.ModeCharDevice != 0
	}
	if *reportPath != "" {
		f, err := os.Create(*reportPath)
		if err != nil {
			return err
		}
		defer f.Close()
		o.Report = f
	}
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if cfg.Kafka.CreateTopics == nil || *cfg.Kafka.CreateTopics {
		if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka); err != nil {
			return err
		}
	}
	var s importer.Summary
	if what == "clickhouse" {
		s, err = importQuery(ctx, cl, cfg.ClickHouse, *chAddr, *query, o)
	} else {
		s, err = importer.Import(ctx, cl, files, o)
	}
	fmt.Fprintf(os.Stderr, "pulse import: %s\n", s)
	return err
}

// importQuery opens ClickHouse (addr over the config's) and imports the
// query's rows.
func importQuery(ctx context.Context, cl *kgo.Client, c config.ClickHouse, addr, query string, o importer.Options) (importer.Summary, error) {
	if addr != "" {
		c.Addr = addr
	}
	if c.Addr == "" {
		return importer.Summary{}, fmt.Errorf("no ClickHouse to query: give -clickhouse HOST:PORT, a config (-config) whose clickhouse.addr is set, or run this beside `pulse dev` (it starts a local ClickHouse)")
	}
	conn, err := history.Open(c)
	if err != nil {
		return importer.Summary{}, err
	}
	defer conn.Close()
	if err := history.Ping(ctx, conn); err != nil {
		return importer.Summary{}, fmt.Errorf("%w: is ClickHouse running at %s?", err, c.Addr)
	}
	return importer.ImportQuery(ctx, cl, conn, query, o)
}

// eventsMapping is the mapping of `pulse import events`: the -mapping
// file with the -map flags over it, and the checked -format.
func eventsMapping(file string, flags importer.Mapping, format string) (importer.Mapping, string, error) {
	if err := importer.CheckFormat(format); err != nil {
		return importer.Mapping{}, "", err
	}
	var m importer.Mapping
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return m, "", err
		}
		if m, err = importer.ParseMapping(b); err != nil {
			return m, "", fmt.Errorf("%s: %w", file, err)
		}
	}
	return m.Over(flags), format, nil
}
