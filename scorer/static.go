package scorer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net"
	"path"
	"strings"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/web"
	"github.com/valyala/fasthttp"
)

// staticFiles is the dashboard, read once from the embedded FS.
type staticFiles struct {
	files map[string]staticFile // by URL path, "/index.html"
}

type staticFile struct {
	body  []byte
	ctype string
	etag  string
}

func loadStatic() (*staticFiles, error) {
	sub, err := fs.Sub(web.Static, "static")
	if err != nil {
		return nil, fmt.Errorf("cannot open the embedded dashboard: %w", err)
	}
	st := &staticFiles{files: map[string]staticFile{}}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "application/octet-stream"
		}
		if strings.HasPrefix(ct, "text/") && !strings.Contains(ct, "charset") {
			ct += "; charset=utf-8"
		}
		sum := sha256.Sum256(b)
		st.files["/"+p] = staticFile{body: b, ctype: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cannot read the embedded dashboard: %w", err)
	}
	return st, nil
}

// DashboardConfig is what the dashboard reads at start: /config.js (as
// window.PULSE_CONFIG) has the models only; GET /v1/dashboard/config (JSON)
// has the read key too, in `pulse dev` only (see WithDashboardKey).
type DashboardConfig struct {
	// ReadKey is handed out in `pulse dev` only; elsewhere the page asks.
	ReadKey string `json:"readKey,omitempty"`
	// Models are the configured models' names, for the user lookup's
	// prediction.
	Models []string `json:"models"`
}

func (s *Server) dashboard(withKey bool) DashboardConfig {
	cfg := s.cfgNow.Load()
	names := make([]string, 0, len(cfg.Models))
	for _, m := range cfg.Models {
		names = append(names, m.Name)
	}
	c := DashboardConfig{Models: names}
	if withKey {
		c.ReadKey = s.dashboardKey
	}
	return c
}

// checkDashboardKey refuses a dashboard key that is not a configured key
// with the read scope alone: whoever opens the page gets it.
func checkDashboardKey(cfg *config.Config, secret string) error {
	if secret == "" {
		return nil
	}
	for i := range cfg.Keys {
		k := &cfg.Keys[i]
		if k.Key != secret {
			continue
		}
		if !k.HasScope(config.ScopeRead) || len(k.Scopes) != 1 {
			return fmt.Errorf("scorer: the dashboard key %q has scopes %v: it must have the read scope alone", k.Name, k.Scopes)
		}
		return nil
	}
	return errors.New("scorer: the dashboard key is not one of the configured keys")
}

// handsDashboardKey reports whether this request may have the dashboard
// key: the scorer has one and listens on loopback, and the request comes
// from the dashboard's own page. Browsers mark a fetch from the same
// origin with Sec-Fetch-Site: same-origin, which a page cannot forge;
// the Host must be a loopback name, or a DNS name an attacker rebound to
// 127.0.0.1 would be "same-origin" to its own page.
func (s *Server) handsDashboardKey(ctx *fasthttp.RequestCtx) bool {
	if s.dashboardKey == "" || !s.loopback.Load() {
		return false
	}
	h := &ctx.Request.Header
	if string(h.Peek("Sec-Fetch-Site")) != "same-origin" || string(h.Peek("Sec-Fetch-Dest")) != "empty" {
		return false
	}
	host, _, err := net.SplitHostPort(string(h.Host()))
	if err != nil {
		host = string(h.Host())
	}
	host = strings.Trim(host, "[]")
	if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" {
		return false
	}
	if o := h.Peek("Origin"); len(o) > 0 && string(o) != "http://"+string(h.Host()) {
		return false
	}
	return true
}

func (s *Server) serveStatic(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		httpapi.WriteError(ctx, fasthttp.StatusMethodNotAllowed, "use GET")
		return
	}
	p := string(ctx.Path())
	switch p {
	case "/config.js":
		// A script any site can include: never the key.
		b, _ := json.Marshal(s.dashboard(false))
		ctx.Response.Header.Set("Cache-Control", "no-store")
		ctx.SetContentType("text/javascript; charset=utf-8")
		ctx.SetBodyString("window.PULSE_CONFIG = " + string(b) + ";\n")
		return
	case "/":
		p = "/index.html"
	}
	f, ok := s.static.files[p]
	if !ok {
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "no such page: "+p)
		return
	}
	if string(ctx.Request.Header.Peek("If-None-Match")) == f.etag {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	ctx.Response.Header.Set("ETag", f.etag)
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.SetContentType(f.ctype)
	ctx.SetBody(f.body)
}

func (s *Server) dashboardConfig(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
	// The answer differs by the request's headers.
	ctx.Response.Header.Set("Vary", "Sec-Fetch-Site, Sec-Fetch-Dest, Origin, Host")
	httpapi.WriteJSON(ctx, s.dashboard(s.handsDashboardKey(ctx)))
}
