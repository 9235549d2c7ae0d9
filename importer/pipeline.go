package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/pulse-rt/pulse/event"
	"github.com/twmb/franz-go/pkg/kgo"
)

// chunkRows is how many rows a worker maps at a time.
const chunkRows = 256

// rowIn is one row as read: its number, columns and values (and, for a
// JSON row, the object), the messageId it gets when it has none, the time
// it was read, and the reader's refusal of it, if any.
type rowIn struct {
	row   int
	names []string
	vals  []any
	obj   map[string]any
	id    string
	now   time.Time
	bad   *RowError
}

// rowOut is a row mapped: its record, or why it was refused, or an error
// that stops the import.
type rowOut struct {
	rec   *kgo.Record
	bad   *RowError
	fatal error
}

// chunk is rows on their way through the workers; done is closed when out
// is filled.
type chunk struct {
	in   []rowIn
	out  []rowOut
	done chan struct{}
}

// pipeline reads the rows of f on one goroutine, maps and encodes them on
// GOMAXPROCS workers, chunkRows at a time, and produces them (or reports
// them) on this goroutine in the file's order: records of one user keep
// their order, and the report its rows'.
func (im *run) pipeline(ctx context.Context, f *file, rs rows, toEvent rowMapper, decide func([]string)) error {
	// rctx stops the reader; records are produced with ctx, which outlives
	// this file.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := runtime.GOMAXPROCS(0)
	jobs := make(chan *chunk, workers)
	order := make(chan *chunk, 2*workers)
	for range workers {
		go func() {
			var n event.Normalizer
			for c := range jobs {
				im.mapChunk(c, toEvent, &n)
				close(c.done)
			}
		}()
	}
	readErr := make(chan error, 1)
	go func() {
		defer close(order)
		defer close(jobs)
		readErr <- im.read(rctx, f, rs, decide, jobs, order)
	}()
	var err error
	for c := range order {
		<-c.done
		for i := range c.out {
			if err != nil {
				break
			}
			in, out := &c.in[i], &c.out[i]
			switch {
			case out.fatal != nil:
				err = out.fatal
				cancel()
			case out.bad != nil:
				im.refuse(ctx, f.name, in.id, in.names, in.vals, out.bad, in.now)
			default:
				im.produce(ctx, out.rec, true)
			}
		}
	}
	if rerr := <-readErr; err == nil {
		err = rerr
	}
	return err
}

// read reads rs into chunks, handing each to the workers and then to the
// producer, in order; a partial chunk goes before a read error.
func (im *run) read(ctx context.Context, f *file, rs rows, decide func([]string), jobs, order chan<- *chunk) error {
	obj, _ := rs.(objRows)
	c := &chunk{in: make([]rowIn, 0, chunkRows)}
	// The rows of a chunk are read within a moment: one clock reading
	// stamps them all.
	now := im.o.Now()
	send := func() error {
		if len(c.in) == 0 {
			return nil
		}
		c.out, c.done = make([]rowOut, len(c.in)), make(chan struct{})
		select {
		case jobs <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case order <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
		c = &chunk{in: make([]rowIn, 0, chunkRows)}
		now = im.o.Now()
		return nil
	}
	for {
		row, names, vals, err := rs.next()
		if err == io.EOF {
			return send()
		}
		var re *RowError
		if err != nil && !errors.As(err, &re) {
			if serr := send(); serr != nil {
				return serr
			}
			return fmt.Errorf("cannot read %s: %w", f.name, err)
		}
		im.rows.Add(1)
		in := rowIn{row: row, names: names, vals: vals, id: f.messageID(row), now: now, bad: re}
		if re == nil {
			if decide != nil {
				decide(names)
			}
			if obj != nil {
				in.obj = obj.object()
			}
		}
		c.in = append(c.in, in)
		if len(c.in) == chunkRows {
			if err := send(); err != nil {
				return err
			}
		}
	}
}

// mapChunk maps and encodes the rows of c.
func (im *run) mapChunk(c *chunk, toEvent rowMapper, n *event.Normalizer) {
	for i := range c.in {
		in, out := &c.in[i], &c.out[i]
		if in.bad != nil {
			out.bad = in.bad
			continue
		}
		v, key, re := toEvent(n, in)
		if re != nil {
			re.Row = in.row
			out.bad = re
			continue
		}
		out.rec = &kgo.Record{Topic: im.o.Events, Key: []byte(key), Value: v}
	}
}
