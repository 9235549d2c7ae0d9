package main

import (
	"context"
	"fmt"
	"os"

	"github.com/pulse-rt/pulse/importer"
	"github.com/pulse-rt/pulse/kafka"
)

const importUsage = "pulse import events [-config FILE] [-format segment|amplitude|posthog] [-mapping FILE] [-map field=column]... [-report FILE] FILE..."

// runImport is `pulse import events FILE...`: CSV and JSON-lines files
// into pulse.events (importer), a summary on stderr; exit code 2 when rows
// were refused.
func runImport(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "events" {
		return fmt.Errorf("want: %s (docs/import.md)", importUsage)
	}
	fl := newCommand("import events", "")
	mappingFile := fl.String("mapping", "", "YAML file of `field: column` lines (docs/import.md)")
	var flags importer.Mapping
	fl.Var(&flags, "map", "field=column, or field=\"constant\" (repeatable; over -mapping)")
	format := fl.String("format", "", "segment, amplitude or posthog: how JSON rows are read (default: by their fields)")
	reportPath := fl.String("report", "", "write the refused rows (file, row, column, value, reason) to this CSV file")
	cfg, err := fl.load(args[1:])
	if err != nil {
		return err
	}
	if fl.NArg() == 0 {
		return fmt.Errorf("no file to import: want %s (- reads stdin)", importUsage)
	}
	if err := importer.CheckFormat(*format); err != nil {
		return err
	}
	var m importer.Mapping
	if *mappingFile != "" {
		b, err := os.ReadFile(*mappingFile)
		if err != nil {
			return err
		}
		if m, err = importer.ParseMapping(b); err != nil {
			return fmt.Errorf("%s: %w", *mappingFile, err)
		}
	}
	o := importer.Options{Events: cfg.Kafka.Topics.Events, Invalid: cfg.Kafka.Topics.Invalid, Mapping: m.Over(flags), Format: *format, Progress: os.Stderr}
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
	s, err := importer.Import(ctx, cl, fl.Args(), o)
	fmt.Fprintf(os.Stderr, "pulse import: %s\n", s)
	return err
}
