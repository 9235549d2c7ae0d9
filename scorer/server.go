package scorer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/suppression"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// LiveHandler serves GET /v1/segments/live: the SSE feed of segment enters
// and exits. The scorer checks the read key before calling it.
type LiveHandler interface {
	ServeSSE(ctx *fasthttp.RequestCtx)
}

// ImportHandler serves the dashboard's Import page API under /v1/import
// (importer.Web, wired by internal/system): sub is the path after
// /v1/import. The scorer checks the key (write or admin scope) first.
type ImportHandler interface {
	ServeImport(ctx *fasthttp.RequestCtx, sub string)
}

// Option configures a Server.
type Option func(*Server)

// WithPredictionLog logs every prediction to cfg.Kafka.Topics.Predictions
// through client, a producer built by kafka.NewClient with
// kafka.ProducerOpts. The server does not close it. Without it predictions
// are not logged.
func WithPredictionLog(client *kgo.Client) Option {
	return func(s *Server) { s.logClient = client }
}

// WithLogQueue sets how many prediction log records may wait for the
// producer, overriding the default 65536. Past it records are shed.
func WithLogQueue(n int) Option {
	return func(s *Server) { s.logQueue = n }
}

// WithLive serves GET /v1/segments/live with h. Without it the path answers 503.
func WithLive(h LiveHandler) Option {
	return func(s *Server) { s.live = h }
}

// WithIdentities lists each person's linked identifiers in GET
// /v1/profiles from ids (identity resolution). The caller runs ids.
// Without it profiles list none.
func WithIdentities(ids *Identities) Option {
	return func(s *Server) { s.identities = ids }
}

// EventReader reads a person's recent events from the history
// (history.Reader implements it).
type EventReader interface {
	RecentEvents(ctx context.Context, ids []string, n int) ([]event.Raw, error)
	LatestTraits(ctx context.Context, ids []string) (map[string]any, error)
}

// WithHistory answers GET /v1/profiles?events=N with the person's recent
// events read from the ClickHouse history through r. Without it profiles
// have no events.
func WithHistory(r EventReader) Option {
	return func(s *Server) { s.events = r }
}

// WithImport serves /v1/import with h. Without it the path answers 503.
func WithImport(h ImportHandler) Option {
	return func(s *Server) { s.imports = h }
}

// WithLogger logs to l, overriding slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(s *Server) { s.log = l }
}

// WithConfigPath makes Reload re-read the config file at path and take its
// models and keys, not only re-read the model files.
func WithConfigPath(path string) Option {
	return func(s *Server) { s.configPath = path }
}

// WithDashboardKey hands key to the dashboard, so that it opens without
// asking for one: `pulse dev` sets it, nothing else should. The key must
// be a configured key with the read scope and no other (New refuses
// anything more). It is served only while the scorer listens on a
// loopback address, only in GET /v1/dashboard/config, and only to a
// same-origin request from the dashboard's own page (Sec-Fetch-Site:
// same-origin, a loopback Host): never as a script another site could
// include, nor to a page on another origin or a rebound DNS name.
func WithDashboardKey(key string) Option {
	return func(s *Server) { s.dashboardKey = key }
}

// WithReadyWhile adds check to the scorer's readiness: /readyz answers 503
// with its error while it returns one (`pulse dev`: the data directory's
// check). Predictions and lookups keep being answered from what the
// store holds.
func WithReadyWhile(check func() error) Option {
	return func(s *Server) { s.readyWhile = check }
}

// Server is the serving API. Create it with New and run it with Run or Serve.
type Server struct {
	cfg        *config.Config
	store      featurestore.Store
	health     *httpapi.Health
	readyWhile func() error // nil: none
	log        *slog.Logger
	live       LiveHandler
	// imports serves the Import page's API; nil: 503.
	imports ImportHandler

	identities *Identities
	deletions  *Deletions // GET /v1/deletions; nil: 503
	// suppressions: GET /v1/suppressions; nil: 503.
	suppressions *suppression.Table
	events       EventReader
	rfm          *RFMView // GET /v1/rfm; nil: not followed

	logClient    *kgo.Client
	forgetClient *kgo.Client // DELETE /v1/profiles; nil: 503
	logQueue     int
	plog         *predictionLog

	configPath   string
	dashboardKey string
	// loopback: Serve's listener is on a loopback address, where the
	// dashboard key may be handed out.
	loopback atomic.Bool
	static   *staticFiles

	auth   *httpapi.Auth
	models atomic.Pointer[modelSet]
	// cfgNow is the config in force (replaced on reload from a path).
	cfgNow   atomic.Pointer[config.Config]
	derive   atomic.Pointer[derivers]
	reloadMu sync.Mutex

	// history is every segment's count over the last hour, sampled while
	// Serve runs.
	history         *countHistory
	historyInterval time.Duration
	rebuildHistory  bool // from the segments topic when Serve starts
	rebuildLimits   rebuildLimits

	scratch sync.Pool
	now     func() time.Time
}

// New builds the server and loads the configured models. A model that
// fails to load is logged and counted, and answers 503 until a reload
// fixes it; the other models serve.
func New(cfg *config.Config, store featurestore.Store, opts ...Option) (*Server, error) {
	if store == nil {
		return nil, errors.New("scorer: a feature store is required")
	}
	s := &Server{
		cfg:      cfg,
		store:    store,
		health:   httpapi.NewHealth(),
		log:      slog.Default(),
		logQueue: 1 << 16,
		now:      time.Now,

		history:         newCountHistory(),
		historyInterval: defaultHistoryInterval,
		rebuildLimits:   rebuildLimits{records: defaultRebuildRecords, time: defaultRebuildTime},
	}
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.With("service", "scorer")
	if err := checkDashboardKey(cfg, s.dashboardKey); err != nil {
		return nil, err
	}
	st, err := loadStatic()
	if err != nil {
		return nil, err
	}
	s.static = st
	s.cfgNow.Store(cfg)
	d := newDerivers(cfg)
	s.derive.Store(&d)
	s.auth = httpapi.NewAuth(cfg.Keys)
	set, status := loadModels(cfg, cfg.Models, nil)
	s.models.Store(set)
	for _, st := range status {
		if st.Error != "" {
			s.log.Error("model not loaded", "model", st.Name, "err", st.Error)
		} else {
			s.log.Info("model loaded", "model", st.Name, "version", st.Version, "format", st.Format)
		}
	}
	if s.logClient != nil {
		s.plog = newPredictionLog(s.logClient, cfg.Kafka.Topics.Predictions, s.logQueue, s.log)
	}
	s.scratch.New = func() any { return new(scratch) }
	if c, ok := store.(featurestore.CacheReporter); ok {
		storeCache.Store(c.CacheStats)
	}
	return s, nil
}

// Reload re-reads the model files (and the config file, given
// WithConfigPath). A model that fails keeps its previous version serving;
// the answer lists every model and the error says how many failed.
func (s *Server) Reload() ([]ModelStatus, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cfg := s.cfgNow.Load()
	if s.configPath != "" {
		next, err := config.Load(s.configPath)
		if err != nil {
			reloadFailures.WithLabelValues("").Inc()
			s.log.Error("reload: config not reloaded; the models and keys in force keep serving", "path", s.configPath, "err", err)
			return nil, fmt.Errorf("cannot reload %s: %w", s.configPath, err)
		}
		cfg = next
	}
	set, status := loadModels(cfg, cfg.Models, s.models.Load())
	s.models.Store(set)
	if s.configPath != "" {
		s.cfgNow.Store(cfg)
		s.auth.Reload(cfg.Keys)
		d := newDerivers(cfg)
		s.derive.Store(&d)
		// The live feed knows the segments and keys too.
		if r, ok := s.live.(interface{ Reload(*config.Config) }); ok {
			r.Reload(cfg)
		}
	}
	failed := 0
	for _, st := range status {
		switch {
		case st.Error != "":
			failed++
			s.log.Error("reload: model not loaded", "model", st.Name, "err", st.Error)
		case st.Changed:
			s.log.Info("reload: model loaded", "model", st.Name, "version", st.Version, "format", st.Format)
		}
	}
	if failed > 0 {
		return status, fmt.Errorf("%d of %d models failed to load", failed, len(status))
	}
	return status, nil
}

// Run listens on cfg.Scorer.Listen until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	return httpapi.ListenAndServe(ctx, s.cfg.Scorer.Listen, "the scorer", s.Serve)
}

// Serve answers on ln until ctx ends, then drains the prediction log. While
// it runs it samples the segment counts for GET /v1/segments?history= (and,
// given WithHistoryRebuild, rebuilds the hour before it in the background).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	go s.health.Watch(ctx, 2*time.Second, s.ready)
	// Its own context: Serve may return on a listener error before ctx ends.
	sctx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() { s.sample(sctx); close(sampled) }()
	defer func() { stopSampling(); <-sampled }()
	if s.rebuildHistory {
		rebuilt := make(chan struct{})
		go func() { s.runRebuild(sctx); close(rebuilt) }()
		defer func() { stopSampling(); <-rebuilt }()
	}
	if s.plog != nil {
		done := make(chan struct{})
		go func() { s.plog.run(ctx); close(done) }()
		defer func() { <-done }()
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsLoopback() {
		s.loopback.Store(true)
	} else if s.dashboardKey != "" {
		s.log.Warn("the dashboard key is not handed out: the scorer listens beyond this machine", "addr", ln.Addr().String())
	}
	s.log.Info("scorer listening", "addr", ln.Addr().String())
	return httpapi.Serve(ctx, s.HTTPServer(), ln, s.log)
}

func (s *Server) ready(ctx context.Context) error {
	if s.readyWhile != nil {
		if err := s.readyWhile(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// Any answer from the store, found or not, proves it is reachable.
	if _, err := s.store.Get(ctx, "user", "\x00readyz"); err != nil && !errors.Is(err, featurestore.ErrNotFound) {
		return fmt.Errorf("online store unreachable: %w", err)
	}
	return nil
}

// HTTPServer is the fasthttp server with the scorer's limits.
func (s *Server) HTTPServer() *fasthttp.Server {
	return httpapi.NewServer(httpapi.ServerOptions{
		Name:         "pulse-scorer",
		Handler:      s.Handler,
		MaxBodyBytes: maxBodyBytes,
		Log:          s.log,
	})
}

const (
	maxBodyBytes   = 4 << 20
	maxPredictRows = 1000
)

// endpoint labels a route in metrics: fixed names, so paths with ids do not
// make new series.
type endpoint uint8

const (
	epPredict endpoint = iota
	epEntity
	epProfile
	epSegments
	epSegment
	epMembers
	epLive
	epReload
	epRFM
	epStatic
	epImport
	epOther
	numEndpoints
)

var endpointNames = [numEndpoints]string{"predict", "entity", "profile", "segments", "segment", "members", "live", "reload", "rfm", "dashboard", "import", "other"}

// Series looked up once: WithLabelValues hashes its labels on every call.
var (
	latencyBy [numEndpoints]prometheus.Observer
	okBy      [numEndpoints]prometheus.Counter
)

func init() {
	for ep, name := range endpointNames {
		latencyBy[ep] = requestSeconds.WithLabelValues(name)
		okBy[ep] = requests.WithLabelValues(name, "200")
	}
}

func countRequest(ep endpoint, code int) {
	if code == fasthttp.StatusOK {
		okBy[ep].Inc()
		return
	}
	requests.WithLabelValues(endpointNames[ep], strconv.Itoa(code)).Inc()
}

// Handler routes a request.
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	if s.health.Serve(ctx) {
		return
	}
	start := time.Now()
	path := ctx.Path()
	ep := epOther
	switch {
	case string(path) == "/v1/predict":
		ep = epPredict
		if s.method(ctx, fasthttp.MethodPost) {
			s.predict(ctx)
		}
	case strings.HasPrefix(string(path), "/v1/profiles/"):
		ep = epProfile
		switch rest := string(path[len("/v1/profiles/"):]); {
		case ctx.IsDelete():
			s.forget(ctx, rest)
		case ctx.IsGet() || ctx.IsHead():
			s.profile(ctx, rest)
		default:
			ctx.Response.Header.Set("Allow", "GET, DELETE")
			httpapi.WriteError(ctx, fasthttp.StatusMethodNotAllowed, "use GET (the profile) or DELETE (delete the person)")
		}
	case string(path) == "/v1/suppressions" || strings.HasPrefix(string(path), "/v1/suppressions/"):
		ep = epProfile
		switch id := strings.TrimPrefix(strings.TrimPrefix(string(path), "/v1/suppressions"), "/"); {
		case ctx.IsDelete() && id != "":
			s.unsuppress(ctx, id)
		case ctx.IsGet() || ctx.IsHead():
			s.suppressionList(ctx, id)
		default:
			ctx.Response.Header.Set("Allow", "GET, DELETE")
			httpapi.WriteError(ctx, fasthttp.StatusMethodNotAllowed, "use GET (the suppressed ids, or one) or DELETE /v1/suppressions/{id} (lift one)")
		}
	case strings.HasPrefix(string(path), "/v1/exports/"):
		ep = epProfile
		if s.method(ctx, fasthttp.MethodGet) {
			s.export(ctx, string(path[len("/v1/exports/"):]))
		}
	case string(path) == "/v1/deletions" || strings.HasPrefix(string(path), "/v1/deletions/"):
		ep = epProfile
		if s.method(ctx, fasthttp.MethodGet) {
			s.deletionStatus(ctx, strings.TrimPrefix(strings.TrimPrefix(string(path), "/v1/deletions"), "/"))
		}
	case strings.HasPrefix(string(path), "/v1/entities/"):
		ep = epEntity
		if s.method(ctx, fasthttp.MethodGet) {
			s.entity(ctx, string(path[len("/v1/entities/"):]))
		}
	case string(path) == "/v1/segments":
		ep = epSegments
		if s.method(ctx, fasthttp.MethodGet) {
			s.segments(ctx)
		}
	case string(path) == "/v1/rfm":
		ep = epRFM
		if s.method(ctx, fasthttp.MethodGet) {
			s.serveRFM(ctx)
		}
	case strings.HasPrefix(string(path), "/v1/rfm/cells/"):
		ep = epRFM
		if s.method(ctx, fasthttp.MethodGet) {
			s.rfmCellMembers(ctx, string(path[len("/v1/rfm/cells/"):]))
		}
	case string(path) == "/v1/segments/live":
		ep = epLive
		if s.method(ctx, fasthttp.MethodGet) {
			s.serveLive(ctx)
		}
		// An SSE stream lasts as long as the client stays: not a latency.
		countRequest(ep, ctx.Response.StatusCode())
		return
	case strings.HasPrefix(string(path), "/v1/segments/"):
		name, sub, _ := strings.Cut(string(path[len("/v1/segments/"):]), "/")
		switch sub {
		case "":
			ep = epSegment
			if s.method(ctx, fasthttp.MethodGet) {
				s.segment(ctx, name)
			}
		case "members":
			ep = epMembers
			if s.method(ctx, fasthttp.MethodGet) {
				s.members(ctx, name)
			}
		default:
			httpapi.WriteError(ctx, fasthttp.StatusNotFound, "no such endpoint: "+string(path))
		}
	case string(path) == "/v1/admin/reload":
		ep = epReload
		if s.method(ctx, fasthttp.MethodPost) {
			s.reload(ctx)
		}
	case string(path) == "/v1/dashboard/config":
		ep = epStatic
		if s.method(ctx, fasthttp.MethodGet) {
			s.dashboardConfig(ctx)
		}
	case string(path) == "/v1/import" || strings.HasPrefix(string(path), "/v1/import/"):
		ep = epImport
		s.serveImport(ctx, string(path[len("/v1/import"):]))
	case strings.HasPrefix(string(path), "/v1/"):
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "no such endpoint: "+string(path))
	default:
		ep = epStatic
		s.serveStatic(ctx)
	}
	countRequest(ep, ctx.Response.StatusCode())
	latencyBy[ep].Observe(time.Since(start).Seconds())
}

// method answers 405 unless the request uses m (GET also allows HEAD).
func (s *Server) method(ctx *fasthttp.RequestCtx, m string) bool {
	got := ctx.Method()
	if string(got) == m || (m == fasthttp.MethodGet && ctx.IsHead()) {
		return true
	}
	ctx.Response.Header.Set("Allow", m)
	httpapi.WriteError(ctx, fasthttp.StatusMethodNotAllowed, "use "+m)
	return false
}

// authorize checks the key from the headers, the query, or else bodyKey,
// answering 401, 403 or 429 itself.
func (s *Server) authorize(ctx *fasthttp.RequestCtx, scope, bodyKey string) bool {
	_, ok := s.authorizeKey(ctx, scope, bodyKey)
	return ok
}

// authorizeKey is authorize, and the key, for an audit log line of what it
// did (deletions, exports).
func (s *Server) authorizeKey(ctx *fasthttp.RequestCtx, scope, bodyKey string) (*config.APIKey, bool) {
	secret := httpapi.KeyFromHeaders(ctx)
	if secret == "" {
		secret = bodyKey
	}
	return s.auth.Authorize(ctx, secret, scope)
}

// keyName is the key's name for a log line ("" for none).
func keyName(k *config.APIKey) string {
	if k == nil {
		return ""
	}
	return k.Name
}

// serveImport checks for a key with the write (or admin) scope, then hands
// the request to the import handler.
func (s *Server) serveImport(ctx *fasthttp.RequestCtx, sub string) {
	if _, ok := s.auth.AuthorizeEither(ctx, httpapi.KeyFromHeaders(ctx), config.ScopeWrite, config.ScopeAdmin); !ok {
		return
	}
	if s.imports == nil {
		httpapi.WriteError(ctx, fasthttp.StatusServiceUnavailable, "imports are not served by this scorer: use pulse import events (docs/import.md)")
		return
	}
	s.imports.ServeImport(ctx, sub)
}

func (s *Server) serveLive(ctx *fasthttp.RequestCtx) {
	if !s.authorize(ctx, config.ScopeRead, "") {
		return
	}
	if s.live == nil {
		httpapi.WriteError(ctx, fasthttp.StatusServiceUnavailable, "the live segment feed is not running on this scorer")
		return
	}
	s.live.ServeSSE(ctx)
}

func (s *Server) reload(ctx *fasthttp.RequestCtx) {
	if !s.authorize(ctx, config.ScopeAdmin, "") {
		return
	}
	status, err := s.Reload()
	if err != nil {
		writeJSONStatus(ctx, fasthttp.StatusInternalServerError, reloadAnswer{Error: err.Error() + "; the previous versions keep serving", Models: status})
		return
	}
	writeJSONStatus(ctx, fasthttp.StatusOK, reloadAnswer{Success: true, Models: status})
}

type reloadAnswer struct {
	Success bool          `json:"success"`
	Error   string        `json:"error,omitempty"`
	Models  []ModelStatus `json:"models"`
}

// writeJSONStatus answers status with v as JSON (or 500 if v cannot be encoded).
func writeJSONStatus(ctx *fasthttp.RequestCtx, status int, v any) {
	httpapi.WriteJSON(ctx, v)
	if ctx.Response.StatusCode() == fasthttp.StatusOK {
		ctx.SetStatusCode(status)
	}
}
