package scorer_test

import (
	"testing"

	"github.com/pulse-rt/pulse/scorer"
	"github.com/valyala/fasthttp"
)

// fakeImports answers with the path it was handed.
type fakeImports struct{}

func (fakeImports) ServeImport(ctx *fasthttp.RequestCtx, sub string) {
	ctx.SetBodyString("import" + sub)
}

// /v1/import takes a key with the write scope, or admin; a read key is
// 403, none 401; a scorer without the import handler answers 503.
func TestImportRouteAndKeys(t *testing.T) {
	h := start(t, newConfig(t, testConfig), newMemStore(), scorer.WithImport(fakeImports{}))
	for _, c := range []struct {
		method, path, key string
		code              int
		body              string
	}{
		{"POST", "/v1/import/preview", "write-key", 200, "import/preview"},
		{"POST", "/v1/import", "admin-key", 200, "import"},
		{"GET", "/v1/import/abc", "write-key", 200, "import/abc"},
		{"POST", "/v1/import/preview", "read-key", 403, ""},
		{"POST", "/v1/import/preview", "", 401, ""},
	} {
		code, body := h.do(c.method, c.path, c.key, "x")
		if code != c.code || c.body != "" && body != c.body {
			t.Errorf("%s %s with %q: %d %s, want %d %s", c.method, c.path, c.key, code, body, c.code, c.body)
		}
	}
	bare := start(t, newConfig(t, testConfig), newMemStore())
	if code, body := bare.do("POST", "/v1/import/preview", "write-key", "x"); code != 503 {
		t.Errorf("no import handler: %d %s, want 503", code, body)
	}
}
