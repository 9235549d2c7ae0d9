// Package importer turns files into events: CSV and JSON lines (gzip or
// not, a path or stdin) are read row by row, each row is mapped to an
// event by a column mapping and validated by event.Decode (the rules ingest
// applies), and the good rows are produced to pulse.events. A bad row never
// stops an import: it goes to the report (row, column, value, reason) and to
// pulse.events.invalid as a dead letter with source "import".
//
// It sits where ingest sits in the flow, for data a shop already has in
// files: `pulse import events` is its command. A row without a messageId
// gets one derived from the file's content and the row number, so an
// import run twice (or resumed after a crash) counts each row once.
package importer
