package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sync/errgroup"
)

// ServerOptions are what tells one Pulse API's fasthttp server from another's.
type ServerOptions struct {
	Name    string // the service, e.g. pulse-ingest (fasthttp's Server.Name)
	Handler fasthttp.RequestHandler
	// MaxBodyBytes is the request body limit a 413 answer states; 0 keeps
	// fasthttp's default and its own answer.
	MaxBodyBytes int
	// BodySlack is read past MaxBodyBytes, so that the handler, not fasthttp,
	// answers an oversized body (ingest reads a little past its limit to
	// give its JSON 413 rather than a dropped connection).
	BodySlack int
	// MaxURLBytes bounds a request's URL (path and query): longer ones are
	// answered 414; default DefaultMaxURLBytes.
	MaxURLBytes int
	// WriteTimeout bounds writing an answer; 0 is none.
	WriteTimeout time.Duration
	// Log gets fasthttp's own messages, at debug level; default slog.Default().
	Log *slog.Logger
}

// DefaultMaxURLBytes is the URL limit: room for any id Pulse accepts
// (event.MaxIDLen bytes), percent-escaped, in /v1/entities/{entity}/{id}
// with a query.
const DefaultMaxURLBytes = 2048

// readBufferSize bounds the request line and headers together (fasthttp's
// ReadBufferSize); past it the answer is 431.
const readBufferSize = 8192

// NewServer is the fasthttp server every Pulse API runs: 30s to read a
// request, 2 minutes idle, no default Server header, URLs up to
// MaxURLBytes (414 past it), the request line and headers up to 8 KiB
// (431), and errors fasthttp meets before the handler answered in the JSON
// error shape.
func NewServer(o ServerOptions) *fasthttp.Server {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	maxURL := o.MaxURLBytes
	if maxURL <= 0 {
		maxURL = DefaultMaxURLBytes
	}
	handler := func(ctx *fasthttp.RequestCtx) {
		if n := len(ctx.Request.Header.RequestURI()); n > maxURL {
			WriteError(ctx, fasthttp.StatusRequestURITooLong, fmt.Sprintf("the URL is %d bytes, over the %d byte limit", n, maxURL))
			return
		}
		o.Handler(ctx)
	}
	srv := &fasthttp.Server{
		Handler:        handler,
		ReadBufferSize: readBufferSize,
		Name:           o.Name,
		ReadTimeout:    30 * time.Second,
		WriteTimeout:   o.WriteTimeout,
		IdleTimeout:    2 * time.Minute,
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			if errors.Is(err, fasthttp.ErrBodyTooLarge) {
				WriteError(ctx, fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("request body over the %d byte limit", o.MaxBodyBytes))
				return
			}
			var small *fasthttp.ErrSmallBuffer
			if errors.As(err, &small) {
				WriteError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("the request line and headers are over the %d byte limit (URLs: at most %d bytes)", readBufferSize, maxURL))
				return
			}
			WriteError(ctx, fasthttp.StatusBadRequest, "cannot parse request: "+err.Error())
		},
		NoDefaultServerHeader: true,
		Logger:                fasthttpLogger{log},
	}
	if o.MaxBodyBytes > 0 {
		srv.MaxRequestBodySize = o.MaxBodyBytes + o.BodySlack
	}
	return srv
}

// ListenAndServe listens on addr and runs serve (a server's Serve) on the
// listener until ctx ends; what names the server in the listen error.
func ListenAndServe(ctx context.Context, addr, what string, serve func(context.Context, net.Listener) error) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen for %s: %w", what, err)
	}
	return serve(ctx, ln)
}

// fasthttpLogger keeps fasthttp's per-connection chatter at debug level.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) { f.l.Debug(fmt.Sprintf(format, args...)) }

// ServeHealth runs /metrics, /healthz and /readyz on addr in g, for a
// service with no HTTP API of its own (the stream, history, webhooks);
// ready says why the service is not ready, checked every 2 seconds.
func ServeHealth(ctx context.Context, g *errgroup.Group, addr, name string, ready func(context.Context) error) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", addr, err)
	}
	health := NewHealth()
	srv := &fasthttp.Server{
		Name: name,
		Handler: func(c *fasthttp.RequestCtx) {
			if !health.Serve(c) {
				WriteError(c, fasthttp.StatusNotFound, "no such endpoint: "+string(c.Path()))
			}
		},
	}
	g.Go(func() error { return Serve(ctx, srv, ln, slog.Default()) })
	g.Go(func() error {
		health.Watch(ctx, 2*time.Second, ready)
		return nil
	})
	slog.Info(name+" health and metrics", "addr", ln.Addr().String())
	return nil
}
