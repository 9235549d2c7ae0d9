package backfill

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/history"
)

// timeLayout is how output times are written: ISO-8601, UTC, milliseconds.
const timeLayout = "2006-01-02T15:04:05.000Z"

// WriteCSV writes entity_id,timestamp,label then one column per feature.
// Missing values are empty cells; lists are JSON.
func (r *Rows) WriteCSV(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := csv.NewWriter(bw)
	head := append([]string{"entity_id", "timestamp", "label"}, r.Features...)
	if err := cw.Write(head); err != nil {
		return err
	}
	rec := make([]string, len(head))
	for i, l := range r.Labels {
		rec[0], rec[1], rec[2] = l.EntityID, l.At.UTC().Format(timeLayout), l.Label
		for j, v := range r.Values[i] {
			rec[3+j] = cell(v)
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	return bw.Flush()
}

// cell formats one value for CSV.
func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case float64:
		if math.IsNaN(x) {
			return ""
		}
		return strconv.FormatFloat(x, 'f', -1, 64)
	case string:
		return x
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

// WriteTable creates table (in the history database unless it is
// "db.table") if missing and inserts the rows: entity_id, timestamp,
// timestamp_ms, label, then a column per feature (Nullable(Float64) for
// numbers, Nullable(String) for strings, JSON String otherwise).
func (r *Rows) WriteTable(ctx context.Context, h *history.Reader, table string) error {
	cols := []string{"entity_id String", "timestamp DateTime", "timestamp_ms Int64", "label String"}
	for i, f := range r.Features {
		cols = append(cols, quote(f)+" "+chType(r.Kinds[i]))
	}
	name := qualified(h, table)
	if err := h.Conn().Exec(ctx, fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s) ENGINE = MergeTree ORDER BY (entity_id, timestamp_ms)", name, strings.Join(cols, ", "))); err != nil {
		return fmt.Errorf("cannot create %s: %w", name, err)
	}
	names := []string{"entity_id", "timestamp", "timestamp_ms", "label"}
	for _, f := range r.Features {
		names = append(names, quote(f))
	}
	b, err := h.Conn().PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s (%s)", name, strings.Join(names, ", ")))
	if err != nil {
		return fmt.Errorf("cannot insert into %s: %w", name, err)
	}
	n := len(r.Labels)
	ids, ats, ms, labels := make([]string, n), make([]time.Time, n), make([]int64, n), make([]string, n)
	for i, l := range r.Labels {
		ids[i], ats[i], ms[i], labels[i] = l.EntityID, l.At, l.At.UnixMilli(), l.Label
	}
	data := []any{ids, ats, ms, labels}
	for j := range r.Features {
		data = append(data, column(r.Kinds[j], n, func(i int) any { return r.Values[i][j] }))
	}
	for i, c := range data {
		if err := b.Column(i).Append(c); err != nil {
			b.Abort()
			return fmt.Errorf("cannot insert into %s: column %s: %w", name, names[i], err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("cannot insert into %s: %w", name, err)
	}
	return nil
}

func chType(kind string) string {
	switch kind {
	case "number":
		return "Nullable(Float64)"
	case "string":
		return "Nullable(String)"
	}
	return "String"
}

// column builds one feature's column for clickhouse-go.
func column(kind string, n int, at func(i int) any) any {
	switch kind {
	case "number":
		c := make([]*float64, n)
		for i := range c {
			if f, ok := at(i).(float64); ok && !math.IsNaN(f) {
				c[i] = &f
			}
		}
		return c
	case "string":
		c := make([]*string, n)
		for i := range c {
			if s, ok := at(i).(string); ok {
				c[i] = &s
			}
		}
		return c
	}
	c := make([]string, n)
	for i := range c {
		c[i] = cell(at(i))
	}
	return c
}

func quote(s string) string { return "`" + strings.ReplaceAll(s, "`", "\\`") + "`" }

func qualified(h *history.Reader, table string) string {
	if db, t, ok := strings.Cut(table, "."); ok {
		return quote(db) + "." + quote(t)
	}
	return h.Table(table)
}
