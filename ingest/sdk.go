package ingest

import (
	"errors"
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// The other SDKs' APIs: Amplitude's HTTP V2 and batch upload, PostHog's
// capture. Their bodies are mapped to Events by event.AmplitudeEvent and
// event.PostHogEvent; the answers are in each vendor's shape, which its
// clients read.
const (
	sdkAmplitude = "amplitude"
	sdkPostHog   = "posthog"
	sdkBatch     = "batch" // Amplitude's or PostHog's, by the body's shape
)

// sdkEndpoints maps paths to the API they speak. PostHog's clients add a
// trailing slash.
var sdkEndpoints = map[string]string{
	"/2/httpapi":  sdkAmplitude,
	"/2/httpapi/": sdkAmplitude,
	"/batch":      sdkBatch,
	"/batch/":     sdkBatch,
	"/capture":    sdkPostHog,
	"/capture/":   sdkPostHog,
	"/e":          sdkPostHog,
	"/e/":         sdkPostHog,
	"/i/v0/e":     sdkPostHog,
	"/i/v0/e/":    sdkPostHog,
}

// amplitudeAnswer is Amplitude's upload answer: code mirrors the status,
// and its clients read the status from it. A 400 lists the refused events'
// indexes by field, as Amplitude does, and Pulse's reasons in rejected.
type amplitudeAnswer struct {
	Code             int              `json:"code"`
	EventsIngested   int              `json:"events_ingested,omitempty"`
	PayloadSize      int              `json:"payload_size_bytes,omitempty"`
	ServerUploadTime int64            `json:"server_upload_time,omitempty"`
	Error            string           `json:"error,omitempty"`
	MissingField     string           `json:"missing_field,omitempty"`
	InvalidFields    map[string][]int `json:"events_with_invalid_fields,omitempty"`
	MissingFields    map[string][]int `json:"events_with_missing_fields,omitempty"`
	Rejected         []Rejected       `json:"rejected,omitempty"`
}

func writeAmplitude(ctx *fasthttp.RequestCtx, a *amplitudeAnswer) {
	ctx.SetStatusCode(a.Code)
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(a)
	ctx.SetBody(b)
}

// amplitudeRequestError answers an error about the whole request.
func amplitudeRequestError(ctx *fasthttp.RequestCtx, err error) {
	a := &amplitudeAnswer{Code: fasthttp.StatusBadRequest, Error: err.Error()}
	var le *event.LimitError
	var fe *event.FieldError
	switch {
	case errors.As(err, &le):
		a.Code = fasthttp.StatusRequestEntityTooLarge
	case errors.As(err, &fe) && strings.HasPrefix(fe.Reason, "required"):
		a.MissingField = fe.Field
	}
	writeAmplitude(ctx, a)
}

// amplitude takes an Amplitude upload. Like Amplitude, it ingests all the
// events or none: with one invalid event it answers 400 listing the invalid
// ones (which go to the dead letters), and Amplitude's clients drop those
// and send the rest again. Valid events are not produced then, so that the
// resend does not count them twice.
func (s *Server) amplitude(ctx *fasthttp.RequestCtx, key *config.APIKey, body []byte) {
	now := s.now()
	start := time.Now()
	b, err := event.DecodeAmplitude(body, s.limits)
	if err != nil {
		amplitudeRequestError(ctx, err)
		return
	}
	recs := make([]*kgo.Record, 0, len(b.Events))
	var dead []*kgo.Record
	bad := &amplitudeAnswer{Code: fasthttp.StatusBadRequest}
	counts := map[event.Type]int{}
	for i, raw := range b.Events {
		e, err := event.AmplitudeEvent(raw, now, s.limits)
		if err != nil {
			field := "events"
			var fe *event.FieldError
			if errors.As(err, &fe) && fe.Field != "" {
				field = fe.Field
			}
			byField := &bad.InvalidFields
			if fe != nil && strings.HasPrefix(fe.Reason, "required") {
				byField = &bad.MissingFields
			}
			if *byField == nil {
				*byField = map[string][]int{}
			}
			(*byField)[field] = append((*byField)[field], i)
			bad.Rejected = append(bad.Rejected, rejectedItem(i, err))
			dead = append(dead, s.refuse(key, i, raw, err, now))
			continue
		}
		if s.suppressed([]byte(e.EntityID())) {
			continue // a person deleted with suppression: answered as accepted
		}
		rec, err := s.record(e)
		if err != nil {
			httpapi.WriteError(ctx, fasthttp.StatusInternalServerError, err.Error())
			return
		}
		recs = append(recs, rec)
		counts[e.Type]++
	}
	normalizeSeconds.Observe(time.Since(start).Seconds())
	if len(dead) > 0 {
		if _, err := s.produce(ctx, dead); err != nil {
			s.unavailable(ctx, err)
			return
		}
		bad.Error = "Request has events with invalid or missing fields; nothing was ingested: send the other events again"
		writeAmplitude(ctx, bad)
		return
	}
	if _, err := s.produce(ctx, recs); err != nil {
		s.unavailable(ctx, err)
		return
	}
	for t, n := range counts {
		acceptedEvents.WithLabelValues(string(t)).Add(float64(n))
	}
	writeAmplitude(ctx, &amplitudeAnswer{Code: fasthttp.StatusOK, EventsIngested: len(recs),
		PayloadSize: len(body), ServerUploadTime: now.UnixMilli()})
}

// posthogError is PostHog's error answer; its Python client reads detail.
type posthogError struct {
	Type   string `json:"type"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
	Attr   string `json:"attr,omitempty"`
	// Error repeats detail, as Pulse's other answers name it.
	Error string `json:"error"`
}

func writePostHogError(ctx *fasthttp.RequestCtx, status int, err error) {
	pe := posthogError{Type: "validation_error", Code: "invalid_payload", Detail: err.Error(), Error: err.Error()}
	var fe *event.FieldError
	if errors.As(err, &fe) {
		pe.Attr = fe.Field
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(pe)
	ctx.SetBody(b)
}

// posthog takes a PostHog capture: one event, a batch or a list. Like a
// Segment batch, valid events are taken and invalid ones dead-lettered and
// listed in rejected; one event alone that is invalid is a 400.
func (s *Server) posthog(ctx *fasthttp.RequestCtx, key *config.APIKey, body []byte) {
	now := s.now()
	start := time.Now()
	b, err := event.DecodePostHog(body, s.limits)
	if err != nil {
		status := fasthttp.StatusBadRequest
		var le *event.LimitError
		if errors.As(err, &le) {
			status = fasthttp.StatusRequestEntityTooLarge
		}
		writePostHogError(ctx, status, err)
		return
	}
	recs := make([]*kgo.Record, 0, len(b.Items))
	var rejected []Rejected
	var firstErr error
	counts := map[event.Type]int{}
	for i, raw := range b.Items {
		e, err := event.PostHogEvent(raw, now, s.limits, b.SentAt)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			rejected = append(rejected, rejectedItem(i, err))
			recs = append(recs, s.refuse(key, i, raw, err, now))
			continue
		}
		if s.suppressed([]byte(e.EntityID())) {
			continue // a person deleted with suppression: answered as accepted
		}
		rec, err := s.record(e)
		if err != nil {
			httpapi.WriteError(ctx, fasthttp.StatusInternalServerError, err.Error())
			return
		}
		recs = append(recs, rec)
		counts[e.Type]++
	}
	normalizeSeconds.Observe(time.Since(start).Seconds())
	if _, err := s.produce(ctx, recs); err != nil {
		s.unavailable(ctx, err)
		return
	}
	for t, n := range counts {
		acceptedEvents.WithLabelValues(string(t)).Add(float64(n))
	}
	if b.Single && firstErr != nil {
		writePostHogError(ctx, fasthttp.StatusBadRequest, firstErr)
		return
	}
	ctx.SetContentType("application/json")
	if len(rejected) == 0 {
		ctx.SetBodyString(`{"status":1}`)
		return
	}
	out, _ := json.Marshal(struct {
		Status   int        `json:"status"`
		Rejected []Rejected `json:"rejected"`
	}{1, rejected})
	ctx.SetBody(out)
}
