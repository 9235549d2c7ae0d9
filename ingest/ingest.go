package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	json "github.com/goccy/go-json"
	"github.com/google/uuid"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// Server is the tracking API. It is safe for concurrent use; create it with
// New and run it with Run (or mount Handler on a listener of your own).
type Server struct {
	cfg    *config.Config
	client *kgo.Client
	auth   *httpapi.Auth
	health *httpapi.Health
	log    *slog.Logger
	limits event.Limits
	now    func() time.Time
	// hold, when set, says why events cannot be acknowledged now (the
	// data directory under the embedded Kafka failed its check): ingest
	// answers 503 with Retry-After and is not ready meanwhile.
	hold func() error
	// reach says whether the producer reaches a broker (nil: the client
	// was not built with kafka.ProducerOpts): while none is, requests are
	// answered 503 at once rather than after the produce timeout.
	reach *kafka.Reachability
	// sup drops the events of suppressed entity ids (Suppress); nil: none.
	sup *Suppressions
}

// New builds the server. client must be a producer built by kafka.NewClient
// with kafka.ProducerOpts; the server does not close it.
func New(cfg *config.Config, client *kgo.Client, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{
		cfg:    cfg,
		client: client,
		auth:   httpapi.NewAuth(cfg.Keys),
		health: httpapi.NewHealth(),
		log:    log.With("service", "ingest"),
		limits: event.Limits{MaxEventBytes: cfg.Ingest.MaxEventBytes, MaxBatchEvents: cfg.Ingest.MaxBatchEvents},
		now:    time.Now,
		reach:  kafka.ReachabilityOf(client),
	}
}

// HoldWhile makes ingest refuse events (503, Retry-After) and fail
// readiness while check returns an error, which the answer and the log
// give. check runs on every request: it must be cheap (an atomic load).
// Call it before serving.
func (s *Server) HoldWhile(check func() error) { s.hold = check }

// Run listens on cfg.Ingest.Listen until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	return httpapi.ListenAndServe(ctx, s.cfg.Ingest.Listen, "ingest", s.Serve)
}

// Serve answers on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	go s.health.Watch(ctx, 2*time.Second, func(ctx context.Context) error {
		if s.hold != nil {
			if err := s.hold(); err != nil {
				return err
			}
		}
		return kafka.Ping(ctx, s.client)
	})
	s.log.Info("ingest listening", "addr", ln.Addr().String())
	return httpapi.Serve(ctx, s.HTTPServer(), ln, s.log)
}

// HTTPServer is the fasthttp server with Pulse's limits.
func (s *Server) HTTPServer() *fasthttp.Server {
	return httpapi.NewServer(httpapi.ServerOptions{
		Name:         "pulse-ingest",
		Handler:      s.Handler,
		MaxBodyBytes: s.cfg.Ingest.MaxBodyBytes,
		// Read a little past the limit so an oversized body gets our JSON
		// 413 rather than a dropped connection.
		BodySlack:    64 << 10,
		WriteTimeout: 30 * time.Second,
		Log:          s.log,
	})
}

// endpoints maps paths to the event type they imply ("" = a batch).
var endpoints = map[string]event.Type{
	"/v1/track":    event.Track,
	"/v1/identify": event.Identify,
	"/v1/page":     event.Page,
	"/v1/p":        event.Page,
	"/v1/screen":   event.Screen,
	"/v1/group":    event.Group,
	"/v1/alias":    event.Alias,
	"/v1/batch":    "",
	"/v1/import":   "",
	"/v1/stream":   "",
}

// Handler routes a request.
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	path := string(ctx.Path())
	if s.health.Serve(ctx) {
		return
	}
	typ, ok := endpoints[path]
	sdk := sdkEndpoints[path]
	if sdk != "" {
		ok = true
	}
	label := path
	if !ok {
		label = "other"
	}
	defer func() {
		requests.WithLabelValues(label, strconv.Itoa(ctx.Response.StatusCode())).Inc()
		requestSeconds.WithLabelValues(label).Observe(time.Since(start).Seconds())
	}()
	// Browsers (analytics.js) call from other origins.
	ctx.Response.Header.Set("Access-Control-Allow-Origin", "*")
	if ctx.IsOptions() {
		ctx.Response.Header.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
		ctx.Response.Header.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Content-Encoding")
		ctx.Response.Header.Set("Access-Control-Max-Age", "86400")
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		return
	}
	if !ok {
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "no such endpoint: "+path)
		return
	}
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST")
		httpapi.WriteError(ctx, fasthttp.StatusMethodNotAllowed, "use POST")
		return
	}
	// The key is checked before the body is read: a key in the headers
	// before the body is even decompressed, one in the body before
	// anything but that member is read. An unauthenticated caller costs
	// nothing more.
	var key *config.APIKey
	if secret := httpapi.KeyFromHeaders(ctx); secret != "" {
		if key, ok = s.auth.Authorize(ctx, secret, config.ScopeWrite); !ok {
			return
		}
	}
	body, status, err := s.body(ctx)
	if err != nil {
		httpapi.WriteErr(ctx, status, err)
		return
	}
	if key == nil {
		field := "writeKey"
		if path == "/v1/stream" || sdk != "" {
			field = "api_key"
		}
		secret, found := event.BodyString(body, field)
		if !found && sdk != sdkAmplitude {
			// PostHog's clients may name it token.
			secret, _ = event.BodyString(body, "token")
		}
		if key, ok = s.auth.Authorize(ctx, secret, config.ScopeWrite); !ok {
			return
		}
	}
	// Held (the data directory cannot keep events): answered once the
	// caller is known, so that only a key holder hears why.
	if s.hold != nil {
		if err := s.hold(); err != nil {
			held.Inc()
			s.health.SetReady(err)
			ctx.Response.Header.Set("Retry-After", "5")
			httpapi.WriteError(ctx, fasthttp.StatusServiceUnavailable, "cannot keep events right now, so none is acknowledged: "+err.Error())
			return
		}
	}
	// Whatever the label, a body that is JSON is taken (Segment's own API
	// is as lenient); one that is not is refused here, naming the label.
	if msg := notJSON(ctx.Request.Header.ContentType(), body); msg != "" {
		httpapi.WriteError(ctx, fasthttp.StatusBadRequest, msg)
		return
	}
	requestBytes.Add(float64(len(body)))
	if sdk != "" {
		if sdk == sdkBatch {
			// Amplitude's batch upload and PostHog's batch share /batch:
			// Amplitude's body has events, PostHog's batch.
			sdk = sdkPostHog
			if event.BodyHas(body, "events") {
				sdk = sdkAmplitude
			}
		}
		if sdk == sdkAmplitude {
			s.amplitude(ctx, key, body)
		} else {
			s.posthog(ctx, key, body)
		}
		return
	}
	switch path {
	case "/v1/batch", "/v1/import":
		s.batch(ctx, key, body)
	case "/v1/stream":
		s.stream(ctx, key, body)
	default:
		s.single(ctx, key, body, typ)
	}
}

// notJSON explains why a body is refused as not JSON, or is "". A body
// labelled JSON (application/json, text/plain, *+json) goes on to the
// decoder, which names what is wrong with it; any other label is taken when
// the body looks like JSON (an object or a list), as Segment's API does:
// some clients label gzip JSON application/x-www-form-urlencoded.
func notJSON(ct, body []byte) string {
	mt, _, _ := strings.Cut(string(ct), ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	if mt == "application/json" || mt == "text/plain" || strings.HasSuffix(mt, "+json") {
		return ""
	}
	i := 0
	for i < len(body) && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n') {
		i++
	}
	if i < len(body) && (body[i] == '{' || body[i] == '[') {
		return ""
	}
	label := "no Content-Type"
	if mt != "" {
		label = "Content-Type " + mt
	}
	if i == len(body) {
		return fmt.Sprintf("the body is empty (%s): send a JSON object", label)
	}
	return fmt.Sprintf("the body is not JSON (%s, and it starts with %q): send a JSON object, plain or gzipped", label, body[i:min(len(body), i+16)])
}

// body returns the request body, gunzipped and within the size limit.
func (s *Server) body(ctx *fasthttp.RequestCtx) ([]byte, int, error) {
	limit := s.cfg.Ingest.MaxBodyBytes
	raw := ctx.PostBody()
	enc := strings.ToLower(strings.TrimSpace(string(ctx.Request.Header.ContentEncoding())))
	// gzip's magic number cannot start JSON: a gzipped body that does
	// not say so is read as gzip.
	if (enc == "" || enc == "identity") && len(raw) >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		enc = "gzip"
	}
	switch enc {
	case "", "identity":
		if len(raw) > limit {
			return nil, fasthttp.StatusRequestEntityTooLarge, fmt.Errorf("request body is %d bytes, over the %d byte limit", len(raw), limit)
		}
		return raw, 0, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fasthttp.StatusBadRequest, fmt.Errorf("invalid gzip body: %w", err)
		}
		// Read one byte past the limit to tell "exactly at" from "over".
		out, err := io.ReadAll(io.LimitReader(zr, int64(limit)+1))
		if err != nil {
			return nil, fasthttp.StatusBadRequest, fmt.Errorf("invalid gzip body: %w", err)
		}
		if len(out) > limit {
			return nil, fasthttp.StatusRequestEntityTooLarge, fmt.Errorf("decompressed request body is over the %d byte limit", limit)
		}
		return out, 0, nil
	}
	return nil, fasthttp.StatusUnsupportedMediaType, fmt.Errorf("Content-Encoding %s is not supported: send gzip or nothing", enc)
}

// Rejected is one invalid item of a batch, as listed in the answer.
type Rejected struct {
	Index  int    `json:"index"`
	Error  string `json:"error"`
	Field  string `json:"field,omitempty"`  // the field's path, when one field is wrong
	Reason string `json:"reason,omitempty"` // and the reason alone
}

// rejectedItem is the i-th item's refusal for err.
func rejectedItem(i int, err error) Rejected {
	e := httpapi.ErrorOf(err)
	return Rejected{Index: i, Error: e.Error, Field: e.Field, Reason: e.Reason}
}

// answer is the success body.
type answer struct {
	Success  bool       `json:"success"`
	Rejected []Rejected `json:"rejected,omitempty"`
}

func (s *Server) single(ctx *fasthttp.RequestCtx, key *config.APIKey, body []byte, typ event.Type) {
	now := s.now()
	n := normalizers.Get().(*event.Normalizer)
	value, info, err := n.Normalize(make([]byte, 0, len(body)+256), body, now, s.limits, event.Defaults{Type: typ})
	normalizers.Put(n)
	if err != nil {
		// The body is the event: whatever is wrong with it, invalid JSON
		// included, it is dead-lettered as sent (at most the event size
		// limit) for the operator to see what the client sent.
		dl := s.refuse(key, 0, body, err, now)
		if _, perr := s.produce(ctx, []*kgo.Record{dl}); perr != nil {
			s.unavailable(ctx, perr)
			return
		}
		status := fasthttp.StatusBadRequest
		if reasonOf(err) == "too_large" {
			status = fasthttp.StatusRequestEntityTooLarge
		}
		httpapi.WriteErr(ctx, status, err)
		return
	}
	rec := &kgo.Record{Topic: s.cfg.Kafka.Topics.Events, Key: []byte(info.EntityID), Value: value}
	if s.suppressed(rec.Key) {
		writeAnswer(ctx, nil)
		return
	}
	if _, err := s.produce(ctx, []*kgo.Record{rec}); err != nil {
		s.unavailable(ctx, err)
		return
	}
	acceptedEvents.WithLabelValues(string(info.Type)).Inc()
	writeAnswer(ctx, nil)
}

// normalizers are reused across requests: a Normalizer keeps its memory.
var normalizers = sync.Pool{New: func() any { return new(event.Normalizer) }}

// batchState is one batch request's memory, reused by later requests once
// the broker acknowledged every record (franz-go holds the records until
// then): the normaliser, every record's key and value in one buffer, and
// the records.
type batchState struct {
	n    event.Normalizer
	b    event.NormalizedBatch
	recs []kgo.Record
	ptrs []*kgo.Record
}

var batchStates = sync.Pool{New: func() any { return new(batchState) }}

func (s *Server) batch(ctx *fasthttp.RequestCtx, key *config.APIKey, body []byte) {
	now := s.now()
	st := batchStates.Get().(*batchState)
	start := time.Now()
	err := st.n.NormalizeBatch(&st.b, body, now, s.limits)
	normalizeSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		batchStates.Put(st)
		var le *event.LimitError
		if errors.As(err, &le) {
			httpapi.WriteErr(ctx, fasthttp.StatusRequestEntityTooLarge, err)
			return
		}
		httpapi.WriteErr(ctx, fasthttp.StatusBadRequest, err)
		return
	}
	items := st.b.Items
	if cap(st.recs) < len(items) {
		st.recs = make([]kgo.Record, len(items))
	}
	st.recs = st.recs[:len(items)]
	st.ptrs = st.ptrs[:0]
	var rejected []Rejected
	var accepted [len(eventTypes)]int
	for i := range items {
		it := &items[i]
		if it.Err != nil {
			rejected = append(rejected, rejectedItem(i, it.Err))
			st.ptrs = append(st.ptrs, s.refuse(key, i, it.Raw, it.Err, now))
			continue
		}
		if s.suppressed(it.Key) {
			continue // a person deleted with suppression: answered as accepted
		}
		// The receive time as the record's timestamp spares franz-go a
		// clock read per record.
		rec := &st.recs[i]
		*rec = kgo.Record{Topic: s.cfg.Kafka.Topics.Events, Key: it.Key, Value: it.Value, Timestamp: now}
		st.ptrs = append(st.ptrs, rec)
		accepted[typeIndex(it.Type)]++
	}
	settled, err := s.produce(ctx, st.ptrs)
	if settled {
		clear(st.ptrs)
		batchStates.Put(st)
	}
	if err != nil {
		s.unavailable(ctx, err)
		return
	}
	for i, n := range accepted {
		if n > 0 {
			acceptedByType[i].Add(float64(n))
		}
	}
	writeAnswer(ctx, rejected)
}

// streamBody is Mage's feature-row ingestion shape. Rows are read one by
// one, numbers as their text, so that an id keeps its digits.
type streamBody struct {
	FeatureSet string            `json:"feature_set"`
	Features   []json.RawMessage `json:"features"`
}

func (s *Server) stream(ctx *fasthttp.RequestCtx, key *config.APIKey, body []byte) {
	var sb streamBody
	if err := json.Unmarshal(body, &sb); err != nil {
		httpapi.WriteError(ctx, fasthttp.StatusBadRequest, "invalid JSON: "+err.Error())
		return
	}
	if sb.FeatureSet == "" {
		httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "feature_set", "required, e.g. user/profile_attributes/5")
		return
	}
	if err := event.CheckText([]byte(`{"feature_set":` + strconv.Quote(sb.FeatureSet) + `}`)); err != nil {
		httpapi.WriteErr(ctx, fasthttp.StatusBadRequest, err)
		return
	}
	if sb.Features == nil {
		httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "features", "required: a list of rows with an id")
		return
	}
	if len(sb.Features) > s.limits.MaxBatchEvents {
		httpapi.WriteFieldError(ctx, fasthttp.StatusRequestEntityTooLarge, "features", fmt.Sprintf("has %d rows, over the %d row limit", len(sb.Features), s.limits.MaxBatchEvents))
		return
	}
	now := s.now()
	recs := make([]*kgo.Record, 0, len(sb.Features))
	var rejected []Rejected
	for i, raw := range sb.Features {
		e, err := s.rowEvent(sb.FeatureSet, raw, now)
		if err != nil {
			rejected = append(rejected, rejectedItem(i, err))
			recs = append(recs, s.refuse(key, i, raw, err, now))
			continue
		}
		rec, err := s.record(e)
		if err != nil {
			httpapi.WriteError(ctx, fasthttp.StatusInternalServerError, err.Error())
			return
		}
		recs = append(recs, rec)
	}
	if _, err := s.produce(ctx, recs); err != nil {
		s.unavailable(ctx, err)
		return
	}
	acceptedEvents.WithLabelValues("stream").Add(float64(len(sb.Features) - len(rejected)))
	ctx.SetContentType("application/json")
	if len(rejected) == 0 {
		ctx.SetBodyString(`{"success":1}`)
		return
	}
	b, _ := json.Marshal(struct {
		Success  int        `json:"success"`
		Rejected []Rejected `json:"rejected"`
	}{1, rejected})
	ctx.SetBody(b)
}

// rowEvent turns a feature row into an identify carrying the row as traits.
func (s *Server) rowEvent(featureSet string, raw []byte, now time.Time) (*event.Event, error) {
	// Decoders make invalid text U+FFFD: refuse it first, naming the column.
	if err := event.CheckText(raw); err != nil {
		return nil, err
	}
	var row map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&row); err != nil {
		return nil, &event.FieldError{Reason: "want an object like {\"id\": 612, \"age\": 31}"}
	}
	id, err := rowID(row["id"])
	if err != nil {
		return nil, err
	}
	traits := make(map[string]any, len(row))
	for k, v := range row {
		if k != "id" {
			traits[k] = v
		}
	}
	// Numbers are written back as sent and read by Decode: the id keeps
	// its digits, the traits become float64 as in any event.
	rawEvent, err := json.Marshal(map[string]any{"type": "identify", "userId": id, "traits": traits, "featureSet": featureSet})
	if err != nil {
		return nil, err
	}
	return event.Decode(rawEvent, now, s.limits, event.Defaults{})
}

// rowID is a row's id as JSON: a string, or a number as sent.
func rowID(v any) (json.RawMessage, error) {
	switch x := v.(type) {
	case string:
		if x != "" {
			return json.Marshal(x)
		}
	case json.Number:
		return json.RawMessage(x), nil
	case nil:
		return nil, &event.FieldError{Field: "id", Reason: "required in every feature row"}
	}
	return nil, &event.FieldError{Field: "id", Reason: "must be a non-empty string or a number"}
}

func (s *Server) record(e *event.Event) (*kgo.Record, error) {
	v, err := e.Marshal()
	if err != nil {
		return nil, fmt.Errorf("cannot encode event: %w", err)
	}
	return &kgo.Record{Topic: s.cfg.Kafka.Topics.Events, Key: []byte(e.EntityID()), Value: v}, nil
}

// refuse counts raw, the index-th event of a batch sent with key, as
// rejected for err (by reasonOf) and returns its dead letter.
func (s *Server) refuse(key *config.APIKey, index int, raw []byte, err error, now time.Time) *kgo.Record {
	rejectedEvents.WithLabelValues(reasonOf(err)).Inc()
	return s.deadLetter(key, index, raw, err, now)
}

// deadLetter is the invalid-events record of raw, the index-th event of a
// batch sent with key, refused for err.
func (s *Server) deadLetter(key *config.APIKey, index int, raw []byte, err error, now time.Time) *kgo.Record {
	dl := event.NewDeadLetter("ingest", event.ReasonInvalid, raw, err, now)
	dl.Index = index
	dl.MessageID = uuid.NewString()
	if key != nil {
		dl.KeyName = key.Name
	}
	return &kgo.Record{Topic: s.cfg.Kafka.Topics.Invalid, Value: dl.Encode()}
}

// produce sends recs and waits until the broker acknowledged every one.
// settled reports that franz-go is done with every record (it is not when
// the wait timed out), so that their memory may be reused.
func (s *Server) produce(ctx *fasthttp.RequestCtx, recs []*kgo.Record) (settled bool, err error) {
	if len(recs) == 0 {
		return true, nil
	}
	var gone <-chan struct{}
	if s.reach != nil {
		if err := s.reach.Err(); err != nil {
			produceErrors.Inc()
			return true, err
		}
		gone = s.reach.Gone()
	}
	start := time.Now()
	pctx, cancel := context.WithTimeout(context.Background(), s.cfg.Ingest.ProduceTimeout.D())
	defer cancel()
	var (
		left  atomic.Int64
		mu    sync.Mutex
		first error
		done  = make(chan struct{})
	)
	left.Store(int64(len(recs)))
	var acked atomic.Int64 // when the last record was acknowledged, in ns since start
	promise := func(r *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
		}
		if left.Add(-1) == 0 {
			acked.Store(int64(time.Since(start)))
			close(done)
		}
	}
	for _, r := range recs {
		s.client.TryProduce(pctx, r, promise)
	}
	// The idempotent producer retries a batch until its delivery timeout
	// rather than fail it, so the wait is bounded here: past the produce
	// timeout the client hears 503 and retries, and messageIds dedupe any
	// record that still lands.
	select {
	case <-done:
		settled = true
		// The promise that closed done ran on franz-go's promise goroutine;
		// how long this one took to run again is the scheduler's share of
		// the answer's latency, not Kafka's.
		ack := time.Duration(acked.Load())
		produceSeconds.Observe(ack.Seconds())
		ackWakeSeconds.Observe((time.Since(start) - ack).Seconds())
	case <-pctx.Done():
		mu.Lock()
		if first == nil {
			first = fmt.Errorf("no acknowledgement within %s: %w", s.cfg.Ingest.ProduceTimeout, pctx.Err())
		}
		mu.Unlock()
		produceSeconds.Observe(time.Since(start).Seconds())
	case <-gone:
		// The broker went away while the records waited: answer now.
		// Records it still takes later are deduplicated downstream by
		// messageId when the client retries.
		mu.Lock()
		if first == nil {
			if first = s.reach.Err(); first == nil { // back already
				first = errors.New("the Kafka broker went away before acknowledging")
			}
		}
		mu.Unlock()
		produceSeconds.Observe(time.Since(start).Seconds())
	}
	mu.Lock()
	err = first
	mu.Unlock()
	if err != nil {
		produceErrors.Inc()
	}
	return settled, err
}

func (s *Server) unavailable(ctx *fasthttp.RequestCtx, err error) {
	s.log.Warn("kafka did not take the records", "err", err)
	ctx.Response.Header.Set("Retry-After", "5")
	msg := "Kafka cannot take the events right now; retry (messageIds make retries safe)"
	if s.reach != nil && s.reach.Err() != nil {
		msg = "Kafka is unreachable; retry (messageIds make retries safe)"
	}
	if errors.Is(err, kgo.ErrMaxBuffered) {
		msg = "ingest is over capacity; retry (messageIds make retries safe)"
	}
	httpapi.WriteError(ctx, fasthttp.StatusServiceUnavailable, msg)
}

func writeAnswer(ctx *fasthttp.RequestCtx, rejected []Rejected) {
	ctx.SetContentType("application/json")
	if len(rejected) == 0 {
		ctx.SetBodyString(`{"success":true}`)
		return
	}
	b, _ := json.Marshal(answer{Success: true, Rejected: rejected})
	ctx.SetBody(b)
}

// reason is the metric label for a rejection: the field at fault, or the limit.
func reasonOf(err error) string {
	var fe *event.FieldError
	if !errors.As(err, &fe) {
		return "invalid"
	}
	switch {
	case strings.Contains(fe.Reason, "byte limit") && fe.Field == "":
		return "too_large"
	case strings.HasPrefix(fe.Reason, "invalid JSON"):
		return "json"
	case fe.Field == "":
		return "invalid"
	}
	return fe.Field
}
