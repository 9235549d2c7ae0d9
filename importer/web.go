package importer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// previewRows is how many rows the Import page shows.
const previewRows = 10

// reportRows is how many refused rows a job's status lists.
const reportRows = 200

// Web is the API of the dashboard's Import page, under /v1/import: the
// scorer routes to it once it checked the caller's key (write or admin).
//
//	POST /v1/import/preview        body: a CSV -> its columns, first rows and a guessed mapping
//	POST /v1/import?name=F&mapping=JSON  body: the CSV -> {"job": ID}, imported in the background
//	GET  /v1/import/ID             -> the job's counts, and when done its summary and report
//
// Jobs import the uploaded file with Import, so its rows get the same
// derived messageIds as from `pulse import events`: uploading a file
// twice counts each row once.
type Web struct {
	ctx  context.Context // the jobs' lifetime
	cl   *kgo.Client
	o    Options // topics and limits
	dir  string  // where uploads are kept while imported
	mu   sync.Mutex
	jobs map[string]*webJob
}

// NewWeb serves imports producing with cl (kafka.ProducerOpts) under o's
// topics and limits, its jobs running until ctx ends.
func NewWeb(ctx context.Context, cl *kgo.Client, o Options) (*Web, error) {
	dir, err := os.MkdirTemp("", "pulse-import-web-*")
	if err != nil {
		return nil, fmt.Errorf("cannot make the upload folder: %w", err)
	}
	go func() {
		<-ctx.Done()
		os.RemoveAll(dir)
	}()
	return &Web{ctx: ctx, cl: cl, o: o, dir: dir, jobs: map[string]*webJob{}}, nil
}

type webJob struct {
	Counters
	name   string
	done   atomic.Bool
	mu     sync.Mutex
	sum    Summary
	err    string
	report bytes.Buffer
}

// ServeImport answers a request under /v1/import; sub is the rest of the
// path ("", "/preview", "/ID").
func (w *Web) ServeImport(ctx *fasthttp.RequestCtx, sub string) {
	post := string(ctx.Method()) == fasthttp.MethodPost
	switch {
	case sub == "/preview" && post:
		w.preview(ctx)
	case (sub == "" || sub == "/") && post:
		w.start(ctx)
	case strings.HasPrefix(sub, "/") && !post && len(sub) > 1:
		w.status(ctx, sub[1:])
	default:
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "no such endpoint: POST /v1/import/preview, POST /v1/import, GET /v1/import/ID")
	}
}

type previewAnswer struct {
	Columns []string   `json:"columns"`
	Rows    [][]string `json:"rows"`
	Guess
}

func (w *Web) preview(ctx *fasthttp.RequestCtx) {
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(ctx.PostBody(), []byte("\ufeff"))))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		httpapi.WriteError(ctx, fasthttp.StatusBadRequest, "cannot read the CSV's header line: "+reason(err))
		return
	}
	for i := range header {
		header[i] = strings.TrimSpace(header[i])
	}
	var rows [][]string
	for len(rows) < previewRows {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			continue // the import reports it with its row
		}
		if err != nil {
			httpapi.WriteError(ctx, fasthttp.StatusBadRequest, "cannot read the CSV: "+reason(err))
			return
		}
		rows = append(rows, rec)
	}
	httpapi.WriteJSON(ctx, previewAnswer{Columns: header, Rows: rows, Guess: GuessMapping(header, rows)})
}

func (w *Web) start(ctx *fasthttp.RequestCtx) {
	var g Guess
	if m := ctx.QueryArgs().Peek("mapping"); len(m) > 0 {
		if err := json.Unmarshal(m, &g); err != nil {
			httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "mapping", "want {\"mapping\": {field: column}, \"timestampFormat\": ...}: "+err.Error())
			return
		}
	}
	m, err := g.Mapping()
	if err != nil {
		httpapi.WriteError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	name := filepath.Base(string(ctx.QueryArgs().Peek("name")))
	if name == "." || name == "/" || name == "" {
		name = "upload.csv"
	}
	id := newJobID()
	path := filepath.Join(w.dir, id+".csv")
	if err := os.WriteFile(path, ctx.PostBody(), 0o600); err != nil {
		httpapi.WriteError(ctx, fasthttp.StatusInternalServerError, "cannot keep the upload: "+err.Error())
		return
	}
	j := &webJob{name: name}
	w.mu.Lock()
	w.jobs[id] = j
	w.mu.Unlock()
	o := w.o
	o.Mapping, o.Report, o.Counters, o.Progress = m, &j.report, &j.Counters, nil
	go func() {
		defer os.Remove(path)
		s, err := Import(w.ctx, w.cl, []string{path}, o)
		j.mu.Lock()
		j.sum = s
		var refused *RefusedError
		if err != nil && !errors.As(err, &refused) {
			j.err = strings.ReplaceAll(err.Error(), path, name)
		}
		j.mu.Unlock()
		j.done.Store(true)
	}()
	httpapi.WriteJSON(ctx, map[string]string{"job": id})
}

type statusAnswer struct {
	File     string     `json:"file"`
	Done     bool       `json:"done"`
	Rows     int64      `json:"rows"`
	Imported int64      `json:"imported"`
	Refused  int64      `json:"refused"`
	Summary  string     `json:"summary,omitempty"`
	Error    string     `json:"error,omitempty"`
	Report   [][]string `json:"report,omitempty"` // row, column, value, reason
}

func (w *Web) status(ctx *fasthttp.RequestCtx, id string) {
	w.mu.Lock()
	j := w.jobs[id]
	w.mu.Unlock()
	if j == nil {
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "no import job "+id)
		return
	}
	a := statusAnswer{File: j.name, Rows: j.Rows(), Imported: j.Imported(), Refused: j.Refused()}
	if j.done.Load() {
		j.mu.Lock()
		a.Done, a.Error = true, j.err
		a.Rows, a.Imported, a.Refused = j.sum.Rows, j.sum.Imported, j.sum.Refused
		a.Summary = j.sum.String()
		lines, _ := csv.NewReader(bytes.NewReader(j.report.Bytes())).ReadAll()
		j.mu.Unlock()
		for i, l := range lines {
			if i == 0 || len(l) < 5 {
				continue // the header
			}
			if len(a.Report) == reportRows {
				break
			}
			a.Report = append(a.Report, l[1:5])
		}
	}
	httpapi.WriteJSON(ctx, a)
}

func newJobID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func reason(err error) string {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("line %d: %v", pe.Line, pe.Err)
	}
	if err == io.EOF {
		return "the file is empty"
	}
	return err.Error()
}
