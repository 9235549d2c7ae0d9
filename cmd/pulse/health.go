package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/valyala/fasthttp"
	"golang.org/x/sync/errgroup"
)

// serveHealth runs /metrics, /healthz and /readyz on addr in g for a
// service with no HTTP API of its own; ready says why it is not ready.
func serveHealth(ctx context.Context, g *errgroup.Group, addr, name string, ready func(context.Context) error) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", addr, err)
	}
	health := httpapi.NewHealth()
	srv := &fasthttp.Server{
		Name: name,
		Handler: func(c *fasthttp.RequestCtx) {
			if !health.Serve(c) {
				httpapi.WriteError(c, fasthttp.StatusNotFound, "no such endpoint: "+string(c.Path()))
			}
		},
	}
	g.Go(func() error { return httpapi.Serve(ctx, srv, ln, slog.Default()) })
	g.Go(func() error {
		health.Watch(ctx, 2*time.Second, ready)
		return nil
	})
	slog.Info(name+" health and metrics", "addr", ln.Addr().String())
	return nil
}
