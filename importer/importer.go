package importer

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pulse-rt/pulse/event"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Options configure an import.
type Options struct {
	Events  string // the events topic; default pulse.events
	Invalid string // the dead-letter topic; default pulse.events.invalid
	Mapping Mapping
	// Rows, when set, reads every row as a feature row (FeatureRows);
	// Mapping and Format are then unused.
	Rows *FeatureRows
	// Format is how JSON rows are read: FormatAuto (by content),
	// FormatSegment (through the mapping), FormatAmplitude or
	// FormatPostHog (their exports' fields; no mapping).
	Format string
	// Report, when set, receives the CSV report of refused rows: file,
	// row, column, value, reason.
	Report io.Writer
	// Progress, when set, receives a progress line a second; on a
	// terminal (Terminal) one line rewritten in place.
	Progress io.Writer
	Terminal bool
	Limits   event.Limits // default event.DefaultLimits
	// Counters, when set, counts the import as it goes, for a caller to
	// watch (the dashboard's Import page).
	Counters *Counters
	Now      func() time.Time
}

// Summary is what an import did.
type Summary struct {
	Files    int
	Query    bool  // the rows of a ClickHouse query, not files
	Rows     int64 // rows read
	Imported int64 // events the broker acknowledged
	Refused  int64 // rows refused (in the report)
	Unmapped []string
	Elapsed  time.Duration
}

func (s Summary) String() string {
	rate := 0.0
	if s.Elapsed > 0 {
		rate = float64(s.Rows) / s.Elapsed.Seconds()
	}
	from := fmt.Sprintf("%d file(s)", s.Files)
	if s.Query {
		from = "the ClickHouse query"
	}
	out := fmt.Sprintf("%d rows from %s: %d imported, %d refused, in %s (%.0f rows/s)",
		s.Rows, from, s.Imported, s.Refused, s.Elapsed.Round(time.Millisecond), rate)
	if len(s.Unmapped) > 0 {
		out += fmt.Sprintf("; columns not mapped (ignored): %v", s.Unmapped)
	}
	return out
}

// Counters are an import's rows so far: read, acknowledged by the broker,
// refused.
type Counters struct {
	rows, acked, refused atomic.Int64
}

// Rows, Imported and Refused read the counters.
func (c *Counters) Rows() int64     { return c.rows.Load() }
func (c *Counters) Imported() int64 { return c.acked.Load() }
func (c *Counters) Refused() int64  { return c.refused.Load() }

// RefusedError is an import that refused rows: everything else went in.
type RefusedError struct{ Refused int64 }

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%d row(s) refused: see the report", e.Refused)
}

// ExitCode is the command's exit status: 2, against 1 for a failure.
func (e *RefusedError) ExitCode() int { return 2 }

// EnsureDefaults fills the zero fields: the topics, the limits, the clock.
func (o *Options) EnsureDefaults() {
	if o.Events == "" {
		o.Events = "pulse.events"
	}
	if o.Invalid == "" {
		o.Invalid = "pulse.events.invalid"
	}
	if o.Limits == (event.Limits{}) {
		o.Limits = event.DefaultLimits
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rows != nil && o.Rows.ID == "" {
		o.Rows.ID = "id"
	}
}

// Validate reports options that do not go together.
func (o *Options) Validate() error {
	if err := CheckFormat(o.Format); err != nil {
		return err
	}
	if (o.Format == FormatAmplitude || o.Format == FormatPostHog) && len(o.Mapping.Fields) > 0 {
		return fmt.Errorf("a %s export is read by its own fields: drop the mapping, or import it as JSON lines through the mapping with -format segment", o.Format)
	}
	if o.Rows != nil {
		if err := o.Rows.Validate(); err != nil {
			return err
		}
		if len(o.Mapping.Fields) > 0 || o.Format != FormatAuto {
			return fmt.Errorf("feature rows are mapped by their columns: no mapping or format")
		}
	}
	return nil
}

// Import reads every file in paths, maps its rows to events and produces
// them with cl, waiting until the broker acknowledged every record. Bad
// rows are reported and sent to the dead-letter topic; they make the
// error a *RefusedError once the rest is in. Any other error (a file that
// cannot be read, a mapping that names a missing column, Kafka refusing
// records) stops the import: what was acknowledged stays, and running the
// same command again counts each row once.
func Import(ctx context.Context, cl *kgo.Client, paths []string, o Options) (Summary, error) {
	return execute(ctx, cl, o, func(im *run) error { return im.files(ctx, paths) })
}

// execute runs one import: read (which produces the rows), then waits for
// the acknowledgements and makes the summary and error.
func execute(ctx context.Context, cl *kgo.Client, o Options, read func(*run) error) (Summary, error) {
	o.EnsureDefaults()
	if err := o.Validate(); err != nil {
		return Summary{}, err
	}
	if o.Counters == nil {
		o.Counters = &Counters{}
	}
	im := &run{Counters: o.Counters, cl: cl, o: o, start: time.Now(), unmapped: map[string]bool{}}
	if o.Report != nil {
		im.report = csv.NewWriter(o.Report)
		im.report.Write([]string{"file", "row", "column", "value", "reason"})
	}
	stop := im.progress()
	err := read(im)
	// Wait for every acknowledgement, also after a failure: what went in
	// is counted.
	if ferr := cl.Flush(ctx); err == nil && ferr != nil {
		err = fmt.Errorf("cannot flush the records: %w", ferr)
	}
	stop()
	if im.report != nil {
		im.report.Flush()
		if rerr := im.report.Error(); err == nil && rerr != nil {
			err = fmt.Errorf("cannot write the report: %w", rerr)
		}
	}
	s := im.summary()
	if err == nil {
		im.mu.Lock()
		err = im.produceErr
		im.mu.Unlock()
		if err != nil {
			err = fmt.Errorf("kafka did not take every record (%d acknowledged; run the same command again: rows already in are counted once): %w", s.Imported, err)
		}
	}
	if err == nil && s.Refused > 0 {
		err = &RefusedError{Refused: s.Refused}
	}
	return s, err
}

// run is one import.
type run struct {
	cl       *kgo.Client
	o        Options
	report   *csv.Writer
	start    time.Time
	nfiles   int
	query    bool
	unmapped map[string]bool

	*Counters
	cur atomic.Pointer[file]

	mu         sync.Mutex
	produceErr error
}

func (im *run) files(ctx context.Context, paths []string) error {
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := im.file(ctx, p); err != nil {
			return err
		}
		im.nfiles++
	}
	return nil
}

func (im *run) file(ctx context.Context, path string) error {
	f, err := openFile(path)
	if err != nil {
		return err
	}
	defer f.close()
	im.cur.Store(f)
	rs, err := newRows(f)
	if err != nil {
		return err
	}
	toEvent, decide, err := im.mapper(f, rs)
	if err != nil {
		return err
	}
	return im.pipeline(ctx, f, rs, toEvent, decide)
}

// rowMapper maps one good row to its record's value and key, with the
// worker's Normalizer.
type rowMapper func(n *event.Normalizer, in *rowIn) ([]byte, string, *RowError)

// mapper is how the rows of f become events: a CSV file's plan is made
// once from its header; a JSON row's from its own fields, or it is read as
// a vendor's export (Options.Format, or guessed from the first row: decide,
// when not nil, is called with each good row's names before it is mapped,
// on the reading goroutine).
func (im *run) mapper(f *file, rs rows) (rowMapper, func([]string), error) {
	lim := im.o.Limits
	if c, ok := rs.(*csvRows); ok {
		if im.o.Format == FormatAmplitude || im.o.Format == FormatPostHog {
			return nil, nil, fmt.Errorf("%s: a %s export is JSON (lines or an array); this file reads as CSV", f.name, im.o.Format)
		}
		m := im.o.Mapping
		if im.o.Rows != nil {
			var err error
			if m, err = im.o.Rows.mapping(c.header); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", f.name, err)
			}
		}
		p, err := newPlan(m, c.header, true, true)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", f.name, err)
		}
		for _, n := range p.unmapped {
			im.unmapped[n] = true
		}
		return func(n *event.Normalizer, in *rowIn) ([]byte, string, *RowError) {
			return p.record(n, in.vals, in.id, in.now, lim)
		}, nil, nil
	}
	if im.o.Rows != nil {
		return func(n *event.Normalizer, in *rowIn) ([]byte, string, *RowError) {
			m, err := im.o.Rows.mapping(in.names)
			if err != nil {
				return nil, "", &RowError{Column: im.o.Rows.ID, Reason: err.Error()}
			}
			p, _ := newPlan(m, in.names, false, false)
			return p.record(n, in.vals, in.id, in.now, lim)
		}, nil, nil
	}
	var (
		exp     export
		decided bool
	)
	decide := func(names []string) {
		if !decided {
			exp, decided = exportOf(im.o.Format, im.o.Mapping, names), true
		}
	}
	return func(n *event.Normalizer, in *rowIn) ([]byte, string, *RowError) {
		if exp == nil {
			p, _ := newPlan(im.o.Mapping, in.names, false, false)
			return p.record(n, in.vals, in.id, in.now, lim)
		}
		e, re := exp(in.obj, in.id, in.now, lim)
		if re != nil {
			return nil, "", re
		}
		v, err := e.Marshal()
		if err != nil {
			return nil, "", &RowError{Reason: fmt.Sprintf("cannot encode the event: %v", err)}
		}
		return v, e.EntityID(), nil
	}, decide, nil
}

// refuse reports a bad row and sends its dead letter.
func (im *run) refuse(ctx context.Context, source, id string, names []string, vals []any, re *RowError, now time.Time) {
	im.refused.Add(1)
	if im.report != nil {
		im.report.Write([]string{source, strconv.Itoa(re.Row), re.Column, re.Value, re.Reason})
	}
	raw := rowJSON(names, vals)
	field := re.Column
	dl := event.NewDeadLetter("import", event.ReasonInvalid, raw, &event.FieldError{Field: field, Reason: re.Reason}, now)
	dl.Index = re.Row
	dl.MessageID = id
	im.produce(ctx, &kgo.Record{Topic: im.o.Invalid, Key: []byte(dl.MessageID), Value: dl.Encode()}, false)
}

func (im *run) produce(ctx context.Context, r *kgo.Record, isEvent bool) {
	im.cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
		if err != nil {
			im.mu.Lock()
			if im.produceErr == nil {
				im.produceErr = err
			}
			im.mu.Unlock()
			return
		}
		if isEvent {
			im.acked.Add(1)
		}
	})
}

func (im *run) summary() Summary {
	s := Summary{Files: im.nfiles, Query: im.query, Rows: im.rows.Load(), Imported: im.acked.Load(), Refused: im.refused.Load(), Elapsed: time.Since(im.start)}
	for n := range im.unmapped {
		s.Unmapped = append(s.Unmapped, n)
	}
	sortStrings(s.Unmapped)
	return s
}
