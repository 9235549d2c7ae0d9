package scorer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"path"
	"strings"

	json "github.com/goccy/go-json"
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

// DashboardConfig is what the dashboard reads at start from /config.js (as
// window.PULSE_CONFIG) or /v1/dashboard/config (as JSON).
type DashboardConfig struct {
	// ReadKey is pre-filled in `pulse dev` only; elsewhere the page asks.
	ReadKey string `json:"readKey,omitempty"`
	// Models are the configured models' names, for the user lookup's
	// prediction.
	Models []string `json:"models"`
}

func (s *Server) dashboard() DashboardConfig {
	cfg := s.cfgNow.Load()
	names := make([]string, 0, len(cfg.Models))
	for _, m := range cfg.Models {
		names = append(names, m.Name)
	}
	return DashboardConfig{ReadKey: s.dashboardKey, Models: names}
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
		b, _ := json.Marshal(s.dashboard())
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
	httpapi.WriteJSON(ctx, s.dashboard())
}
