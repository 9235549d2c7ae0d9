package importer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	json "github.com/goccy/go-json"
)

// file is one input opened for reading: its identity, its size and a
// reader of its (decompressed) rows.
type file struct {
	name string
	// id is the first 16 bytes of the SHA-256 of the file's bytes as
	// stored (compressed when gzip), in hex: the stem of the messageIds
	// derived for its rows. The content, not the name and size, so that a
	// re-export of the same name and size with other rows is new data,
	// and the same file renamed or copied is the same data.
	id    string
	size  int64
	read  atomic.Int64 // bytes of the stored file read so far
	r     io.Reader
	close func() error
}

func (f *file) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	f.read.Add(int64(n))
	return n, err
}

// openFile opens path ("-": stdin, spooled to a temporary file so that it
// can be hashed before its rows are read) and hashes it.
func openFile(path string) (*file, error) {
	var (
		fh  *os.File
		err error
	)
	f := &file{name: path}
	if path == "-" {
		f.name = "stdin"
		if fh, err = os.CreateTemp("", "pulse-import-*"); err != nil {
			return nil, fmt.Errorf("cannot spool stdin: %w", err)
		}
		os.Remove(fh.Name())
		if _, err = io.Copy(fh, os.Stdin); err != nil {
			fh.Close()
			return nil, fmt.Errorf("cannot read stdin: %w", err)
		}
	} else if fh, err = os.Open(path); err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	if _, err := fh.Seek(0, io.SeekStart); err != nil {
		fh.Close()
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(h, fh)
	if err == nil {
		_, err = fh.Seek(0, io.SeekStart)
	}
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("cannot read %s: %w", f.name, err)
	}
	f.id, f.size, f.r, f.close = hex.EncodeToString(h.Sum(nil)[:16]), n, fh, fh.Close
	return f, nil
}

// messageID is the id of the row-th row of f when the row has none.
func (f *file) messageID(row int) string {
	b := make([]byte, 0, len("import-")+len(f.id)+1+10)
	b = append(append(append(b, "import-"...), f.id...), '-')
	return string(strconv.AppendInt(b, int64(row), 10))
}

// rows reads one file's rows.
type rows interface {
	// next returns the next row's number, column names and values. A
	// *RowError is a bad row (the reader goes on); io.EOF ends the file;
	// any other error stops the import.
	next() (row int, names []string, vals []any, err error)
}

// newRows opens the rows of f: gzip when it starts with gzip's magic, JSON
// lines when its name says so (.jsonl, .ndjson, .json) or, for any other
// name, when it starts with '{'; else CSV.
func newRows(f *file) (rows, error) {
	br := bufio.NewReaderSize(f, 256<<10)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("cannot read %s as gzip: %w", f.name, err)
		}
		r = bufio.NewReaderSize(zr, 256<<10)
	}
	b := r.(*bufio.Reader)
	name := strings.TrimSuffix(strings.ToLower(f.name), ".gz")
	first, _ := b.Peek(64)
	first = bytes.TrimLeft(first, " \t\r\n\ufeff")
	switch filepath.Ext(name) {
	case ".jsonl", ".ndjson", ".json":
		if bytes.HasPrefix(first, []byte("[")) {
			return newArrayRows(b, f.name)
		}
		return &jsonRows{r: b}, nil
	case ".csv", ".tsv":
	default:
		if bytes.HasPrefix(first, []byte("{")) {
			return &jsonRows{r: b}, nil
		}
		if bytes.HasPrefix(first, []byte("[")) {
			return newArrayRows(b, f.name)
		}
	}
	return newCSVRows(b, f.name, filepath.Ext(name) == ".tsv")
}

// objRows are rows read as JSON objects: object is the last row's.
type objRows interface {
	rows
	object() map[string]any
}

// csvRows reads CSV with a header line. Row 1 is the first row after the
// header.
type csvRows struct {
	r      *csv.Reader
	header []string
	row    int
}

func newCSVRows(r io.Reader, name string, tabs bool) (*csvRows, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	if tabs {
		cr.Comma = '\t'
	}
	header, err := cr.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("%s is empty: want a header line naming the columns", name)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the header of %s: %w", name, err)
	}
	header[0] = strings.TrimPrefix(header[0], "\ufeff")
	seen := map[string]bool{}
	var dup []string
	for i, h := range header {
		header[i] = strings.TrimSpace(h)
		if seen[header[i]] {
			dup = append(dup, header[i])
		}
		seen[header[i]] = true
	}
	if len(dup) > 0 {
		sort.Strings(dup)
		return nil, fmt.Errorf("the header of %s names %s more than once", name, strings.Join(dup, ", "))
	}
	return &csvRows{r: cr, header: header}, nil
}

func (c *csvRows) next() (int, []string, []any, error) {
	rec, err := c.r.Read()
	if err == io.EOF {
		return 0, nil, nil, err
	}
	c.row++
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return c.row, c.header, nil, &RowError{Row: c.row, Reason: fmt.Sprintf("cannot read the row (line %d): %v", pe.Line, pe.Err)}
		}
		return 0, nil, nil, err
	}
	if len(rec) != len(c.header) {
		vals := make([]any, len(rec))
		for i, s := range rec {
			vals[i] = s
		}
		return c.row, c.header, vals, &RowError{Row: c.row, Value: strings.Join(rec, ","), Reason: fmt.Sprintf("has %d columns, the header has %d", len(rec), len(c.header))}
	}
	vals := make([]any, len(rec))
	for i, s := range rec {
		vals[i] = s
	}
	return c.row, c.header, vals, nil
}

// jsonRows reads JSON lines: one object a line, nested objects flattened
// to dotted columns (properties.revenue). Row n is line n; blank lines are
// skipped.
type jsonRows struct {
	r    *bufio.Reader
	line int
	obj  map[string]any
}

func (j *jsonRows) object() map[string]any { return j.obj }

func (j *jsonRows) next() (int, []string, []any, error) {
	for {
		line, err := j.r.ReadSlice('\n')
		if err == io.EOF && len(line) == 0 {
			return 0, nil, nil, io.EOF
		}
		j.line++
		if errors.Is(err, bufio.ErrBufferFull) {
			// Skip the rest of an over-long line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = j.r.ReadSlice('\n')
			}
			return j.line, nil, nil, &RowError{Row: j.line, Reason: fmt.Sprintf("line is over %d bytes", j.r.Size())}
		}
		if err != nil && err != io.EOF {
			return 0, nil, nil, err
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var obj map[string]any
		d := json.NewDecoder(bytes.NewReader(line))
		d.UseNumber()
		if err := d.Decode(&obj); err != nil || obj == nil {
			return j.line, nil, nil, &RowError{Row: j.line, Value: clip(string(line)), Reason: "not a JSON object"}
		}
		j.obj = obj
		var names []string
		var vals []any
		flatten("", obj, &names, &vals)
		return j.line, names, vals, nil
	}
}

// arrayRows reads a JSON array of objects (an export of PostHog's events,
// a Segment batch's items): row n is the array's n-th element.
type arrayRows struct {
	d   *stdjson.Decoder
	row int
	obj map[string]any
	end bool
}

func newArrayRows(r io.Reader, name string) (*arrayRows, error) {
	d := stdjson.NewDecoder(r)
	d.UseNumber()
	if _, err := d.Token(); err != nil {
		return nil, fmt.Errorf("cannot read %s as a JSON array: %w", name, err)
	}
	return &arrayRows{d: d}, nil
}

func (a *arrayRows) object() map[string]any { return a.obj }

func (a *arrayRows) next() (int, []string, []any, error) {
	if a.end {
		return 0, nil, nil, io.EOF
	}
	if !a.d.More() {
		a.end = true
		if tok, err := a.d.Token(); err != nil || tok != stdjson.Delim(']') {
			return 0, nil, nil, fmt.Errorf("the JSON array ends after %d element(s) with no closing ]: is the file cut short?", a.row)
		}
		return 0, nil, nil, io.EOF
	}
	a.row++
	var v any
	if err := a.d.Decode(&v); err != nil {
		// The array's syntax is broken: nothing after this is a row.
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, nil, fmt.Errorf("the JSON array is cut short in element %d: is the file complete?", a.row)
		}
		return 0, nil, nil, fmt.Errorf("element %d of the JSON array: %w", a.row, err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return a.row, nil, nil, &RowError{Row: a.row, Value: clip(text(v)), Reason: "not a JSON object"}
	}
	a.obj = obj
	var names []string
	var vals []any
	flatten("", obj, &names, &vals)
	return a.row, names, vals, nil
}

func flatten(prefix string, m map[string]any, names *[]string, vals *[]any) {
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
			flatten(prefix+k+".", sub, names, vals)
			continue
		}
		*names = append(*names, prefix+k)
		*vals = append(*vals, v)
	}
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
