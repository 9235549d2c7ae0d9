package destination

import (
	"context"
	"net"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/valyala/fasthttp"
)

// Status is one destination as the admin API lists it.
type Status struct {
	Name     string   `json:"name"`
	Type     string   `json:"type"`
	Segments []string `json:"segments"`
	Traits   []string `json:"traits,omitempty"`
	Group    string   `json:"group"`
	Paused   bool     `json:"paused"`
}

// Statuses lists the destinations in config order.
func (s *Service) Statuses() []Status {
	out := make([]Status, len(s.dests))
	for i, d := range s.dests {
		out[i] = Status{Name: d.Name, Type: d.Type, Segments: d.Segments, Traits: d.Traits, Group: kafka.DestinationGroup(d.Name), Paused: s.runners[i].Paused()}
	}
	return out
}

// Handler is the admin API, every call with an admin-scoped key:
//
//	GET  /v1/destinations               the destinations and whether each is paused
//	POST /v1/destinations/{name}/pause  stop delivering (at the next batch) until resumed
//	POST /v1/destinations/{name}/resume deliver again
//
// Pausing holds this process's runner: with several `pulse destinations`
// processes, pause each. health serves /healthz, /readyz and /metrics.
func (s *Service) Handler(health *httpapi.Health) fasthttp.RequestHandler {
	keys := httpapi.NewKeys(s.cfg.Keys)
	return func(ctx *fasthttp.RequestCtx) {
		if health.Serve(ctx) {
			return
		}
		path := string(ctx.Path())
		if path != "/v1/destinations" && !strings.HasPrefix(path, "/v1/destinations/") {
			httpapi.WriteError(ctx, fasthttp.StatusNotFound, "no such endpoint: "+path)
			return
		}
		if _, retry, err := keys.Check(httpapi.KeyFromHeaders(ctx), config.ScopeAdmin); err != nil {
			httpapi.WriteAuthError(ctx, err, retry)
			return
		}
		if path == "/v1/destinations" {
			if method(ctx, fasthttp.MethodGet) {
				httpapi.WriteJSON(ctx, map[string]any{"destinations": s.Statuses()})
			}
			return
		}
		name, action, _ := strings.Cut(path[len("/v1/destinations/"):], "/")
		r := s.byName[name]
		if r == nil {
			httpapi.WriteError(ctx, fasthttp.StatusNotFound, "no destination named "+name)
			return
		}
		switch action {
		case "pause", "resume":
			if !method(ctx, fasthttp.MethodPost) {
				return
			}
			if action == "pause" {
				r.Pause()
			} else {
				r.Resume()
			}
			httpapi.WriteJSON(ctx, map[string]any{"name": name, "paused": r.Paused()})
		default:
			httpapi.WriteError(ctx, fasthttp.StatusNotFound, "no such endpoint: "+path+" (want .../pause or .../resume)")
		}
	}
}

func method(ctx *fasthttp.RequestCtx, m string) bool {
	if string(ctx.Method()) == m || (m == fasthttp.MethodGet && ctx.IsHead()) {
		return true
	}
	ctx.Response.Header.Set("Allow", m)
	httpapi.WriteError(ctx, fasthttp.StatusMethodNotAllowed, "use "+m)
	return false
}

// Serve runs the admin API, /healthz, /readyz (ready while a Kafka broker
// answers) and /metrics on ln until ctx ends.
func (s *Service) Serve(ctx context.Context, ln net.Listener) error {
	cl, err := kafka.NewClient(s.cfg.Kafka)
	if err != nil {
		return err
	}
	defer cl.Close()
	health := httpapi.NewHealth()
	go health.Watch(ctx, 2*time.Second, func(ctx context.Context) error { return kafka.Ping(ctx, cl) })
	srv := httpapi.NewServer(httpapi.ServerOptions{Name: "pulse-destinations", Handler: s.Handler(health), Log: s.opts.Log})
	return httpapi.Serve(ctx, srv, ln, s.opts.Log)
}
