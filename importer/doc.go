// Package importer turns data a shop already has into events: CSV, JSON
// lines and JSON arrays (gzip or not, a path or stdin), Amplitude's and
// PostHog's exports (read by their own fields through event's mappings),
// feature rows as /v1/stream takes them (identifies tagged with a feature
// set), and the rows of a ClickHouse query. Each row is mapped to an event
// by a column mapping and validated by event.Decode (the rules ingest
// applies), and the good rows are produced to pulse.events. A bad row never
// stops an import: it goes to the report (row, column, value, reason) and
// to pulse.events.invalid as a dead letter with source "import".
//
// It sits where ingest sits in the flow, for data a shop already has:
// `pulse import events|rows|clickhouse` are its commands (cmd/pulse opens
// the ClickHouse connection), and Web is the API of the dashboard's Import
// page, which internal/system hands the scorer (scorer.WithImport). A row without a messageId gets one derived
// from the file's content and the row number (from a query row's content),
// so an import run twice, or resumed after a crash, counts each row once.
package importer
