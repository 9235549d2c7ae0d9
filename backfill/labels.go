package backfill

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/history"
)

// Label is one training example's key: an entity, the time its features
// are taken as of, and the label (kept as text).
type Label struct {
	EntityID string
	At       time.Time
	Label    string
}

// ReadLabelsCSV reads labels from CSV with the header entity_id,timestamp,label
// (in that order); timestamps are ISO-8601 or epoch milliseconds. Errors
// name the line.
func ReadLabelsCSV(r io.Reader) ([]Label, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 3
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("cannot read labels header: %w", err)
	}
	if got := strings.Join(head, ","); strings.TrimPrefix(got, "\ufeff") != "entity_id,timestamp,label" {
		return nil, fmt.Errorf("labels line 1: header is %q, want entity_id,timestamp,label", got)
	}
	var labels []Label
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return labels, nil
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read labels: %w", err)
		}
		at, err := history.ParseTime(rec[1])
		if err != nil {
			return nil, fmt.Errorf("labels line %d: timestamp: %w", line, err)
		}
		if rec[0] == "" {
			return nil, fmt.Errorf("labels line %d: entity_id is empty", line)
		}
		labels = append(labels, Label{EntityID: rec[0], At: at, Label: rec[2]})
	}
}

// LabelsFromQuery runs sql on the history database; it must return the
// columns entity_id, timestamp (a DateTime, or epoch milliseconds), label.
func LabelsFromQuery(ctx context.Context, r *history.Reader, sql string) ([]Label, error) {
	// toString gives every column one Go type, whatever the query's types;
	// a DateTime prints as "2006-01-02 15:04:05" in the server's zone (UTC
	// is expected: give epoch milliseconds to be sure).
	q := fmt.Sprintf("SELECT toString(entity_id), toString(timestamp), toString(label) FROM (%s)", sql)
	rows, err := r.Conn().Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("cannot run labels query: %w", err)
	}
	defer rows.Close()
	var labels []Label
	for rows.Next() {
		var id, ts, label string
		if err := rows.Scan(&id, &ts, &label); err != nil {
			return nil, err
		}
		at, err := history.ParseTime(ts)
		if err != nil {
			return nil, fmt.Errorf("labels query row %d: timestamp: %w", len(labels)+1, err)
		}
		labels = append(labels, Label{EntityID: id, At: at, Label: label})
	}
	return labels, rows.Err()
}
