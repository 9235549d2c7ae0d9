// Command pulse is the one binary: `pulse dev` runs everything in one
// process on embedded parts; the other commands run one service each
// against real Kafka, Redis and ClickHouse.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `pulse — real-time features, predictions and live segments

Usage:
  pulse dev [-config FILE] [-demo]  everything in one process on embedded Kafka and Pebble
                                  (-destinations-listen ADDR: the destinations' admin API)
  pulse ingest -config FILE       the tracking API (Segment-compatible) into Kafka
  pulse stream -config FILE       the feature processors (consumer group pulse-stream)
  pulse scorer -config FILE       predictions, entities, segments, live feed, dashboard
  pulse webhooks -config FILE     deliver segment enter/exit records to the configured webhooks
  pulse destinations -config FILE deliver segment changes to the configured destinations
                                  (webhook, Segment API, templated HTTP, Kafka)
  pulse history -config FILE      copy events, segment changes and predictions into ClickHouse
  pulse backfill features|training-set|predict|verify -config FILE ...
                                  replay history through the same feature code as the stream
  pulse validate -config FILE     check a config and report every problem
  pulse store repair -config FILE [-dry-run]
                                  put Redis's segment member lists right from its vectors (after lost writes)
  pulse delete [-config FILE] [-kind KIND] [-file FILE|-] [ID]...
                                  delete people on request (GDPR, CCPA), in bulk (docs/identity.md)
  pulse import events [-format segment|amplitude|posthog] [-mapping FILE] [-map field=column]... [-report FILE] FILE...
                                  CSV, JSON lines or Segment/Amplitude/PostHog exports (.gz, - for
                                  stdin) into events; exit code 2 when rows were refused (docs/import.md)
  pulse import rows FILE... -feature-set NAME [-id COLUMN] [-report FILE]
                                  feature rows (what /v1/stream takes) into identifies
  pulse import clickhouse -query 'SELECT ...' [-clickhouse HOST:PORT] [-mapping FILE] [-map field=column]...
                                  a ClickHouse query's rows into events, mapped as files are
  pulse loadtest ingest [flags]   open-loop load against ingest, with a raw-produce baseline
  pulse loadtest floor [flags]    serve ingest's floor in a process of its own (for ingest -floor-url)
  pulse loadtest predict [flags]  open-loop predictions against the scorer, with a bare-handler baseline
  pulse loadtest freshness [flags]
                                  time from ingest's 200 to the feature being readable
  pulse loadtest identity [flags] time from an identify to the merged person answered for the anonymous id
  pulse loadtest segments [flags] time from an event (or a window's expiry) to the segment change on SSE
  pulse loadtest soak [flags]     steady mixed load (ingest, predict, SSE clients coming and going) for
                                  -duration, with goroutines, live heap and open files sampled: flat or not
  pulse loadtest peer [flags]     the same events through Pulse's stream and a Kafka Streams peer on a real
                                  Kafka and Redis: events/s, CPU per event, freshness, features compared

Run 'pulse COMMAND -h' for a command's flags.
`

// commands are pulse's commands by name.
var commands = map[string]func(ctx context.Context, args []string) error{
	"dev":          runDev,
	"ingest":       runIngest,
	"stream":       runStream,
	"scorer":       runScorer,
	"webhooks":     runWebhooks,
	"destinations": runDestinations,
	"history":      runHistory,
	"backfill":     runBackfill,
	"validate":     func(_ context.Context, args []string) error { return runValidate(args) },
	"loadtest":     runLoadtest,
	"import":       runImport,
	"store":        runStore,
	"delete":       runDelete,
}

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()})))
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, args := os.Args[1], os.Args[2:]
	if cmd == "help" || cmd == "-h" || cmd == "--help" {
		fmt.Print(usage)
		return
	}
	runCmd := commands[cmd]
	if runCmd == nil {
		fmt.Fprintf(os.Stderr, "pulse: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	err := runCmd(ctx, args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulse %s: %v\n", cmd, err)
		code := 1
		var coded interface{ ExitCode() int }
		if errors.As(err, &coded) {
			code = coded.ExitCode()
		}
		os.Exit(code)
	}
}

func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("PULSE_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}
