package destination

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"text/template"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/segment"
)

// HTTP sends one request per change to any JSON API, its body rendered
// from Template over the change's TemplateData (config.TemplateFuncs:
// json). Each request carries the idempotency key in Idempotency-Key,
// then Headers, then the auth.
type HTTP struct {
	URL string
	// URLTemplate, when set, renders the URL from the change instead.
	URLTemplate *template.Template
	Method      string // default POST
	Headers     map[string]string
	Auth        *config.DestinationAuth
	Template    *template.Template
	// Decimals rounds a trait's Score and Previous in the template data.
	Decimals int
	Client   *http.Client // default NewHTTPClient()
}

// TemplateData is what an http destination's template sees of a change.
type TemplateData struct {
	Kind     string         // segment or trait
	Entity   string         // the entity type, e.g. user
	ID       string         // the entity's id
	Segment  string         // the segment's name; "" for a trait change
	Change   string         // enter or exit; "" for a trait change
	Entered  bool           // true on enter, false on exit (and for a trait change)
	At       Time           // when the change happened (event time), RFC 3339 in UTC
	ChangeID string         // the idempotency key
	Features map[string]any // the entity's features at the change (segment changes)
	Reason   string         // "deleted" on the exits of a person deleted on request, else ""

	// A trait change's: the trait's name, its new and previous scores
	// rounded to the destination's decimals (float64, or nil when there
	// is none: write them with json), and its model's version.
	Trait           string
	Score, Previous any
	Model           string
	ModelVersion    string
}

// Time prints as RFC 3339 (with nanoseconds when there are any); its
// methods are time.Time's ({{.At.Unix}}).
type Time struct{ time.Time }

func (t Time) String() string { return t.UTC().Format(time.RFC3339Nano) }

// NewTemplateData is the data of change c, a trait's scores rounded to
// decimals.
func NewTemplateData(c *Change, decimals int) TemplateData {
	r := &c.Record
	d := TemplateData{
		Kind: c.Kind, Entity: r.Entity, ID: r.EntityID, Segment: r.Segment, Change: r.Change,
		Entered: r.Change == segment.ChangeEnter, At: Time{r.At}, ChangeID: r.ID, Features: r.Features,
		Reason: r.Reason,
	}
	if d.Kind == "" {
		d.Kind = KindSegment
	}
	if ts := c.Trait; ts != nil {
		f := TraitFilter{Decimals: decimals}
		d.Trait, d.Model, d.ModelVersion = ts.Trait, ts.Model, ts.Version
		d.Score, d.Previous = orNil(f.Round(ts.Score)), orNil(f.Round(ts.Previous))
	}
	return d
}

// orNil is *v, or an untyped nil (json writes null).
func orNil(v *float64) any {
	if v == nil {
		return nil
	}
	return *v
}

// Render is the body of change c.
func (h *HTTP) Render(c *Change) ([]byte, error) {
	var b bytes.Buffer
	if err := h.Template.Execute(&b, NewTemplateData(c, h.Decimals)); err != nil {
		return nil, fmt.Errorf("cannot render the template: %w", err)
	}
	return b.Bytes(), nil
}

// Deliver implements Sink.
func (h *HTTP) Deliver(ctx context.Context, batch []Change) []Failure {
	var fails []Failure
	for i := range batch {
		if f := h.do(ctx, &batch[i]); f != nil {
			f.Index = i
			fails = append(fails, *f)
		}
	}
	return fails
}

func (h *HTTP) do(ctx context.Context, c *Change) *Failure {
	body, err := h.Render(c)
	if err != nil {
		return &Failure{Err: err}
	}
	method := h.Method
	if method == "" {
		method = http.MethodPost
	}
	url := h.URL
	if h.URLTemplate != nil {
		var b bytes.Buffer
		if err := h.URLTemplate.Execute(&b, NewTemplateData(c, h.Decimals)); err != nil {
			return &Failure{Err: fmt.Errorf("cannot render the URL: %w", err)}
		}
		url = b.String()
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return &Failure{Err: fmt.Errorf("cannot build request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pulse-destinations/1")
	req.Header.Set("Idempotency-Key", c.Key())
	for k, v := range h.Headers {
		req.Header.Set(k, v)
	}
	if a := h.Auth; a != nil {
		if a.Bearer != "" {
			req.Header.Set("Authorization", "Bearer "+a.Bearer)
		} else if a.Username != "" || a.Password != "" {
			req.SetBasicAuth(a.Username, a.Password)
		}
	}
	client := h.Client
	if client == nil {
		client = defaultClient
	}
	_, f := send(client, req)
	return f
}
