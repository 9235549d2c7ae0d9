package scorer_test

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"strconv"
	"testing"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/model"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/valyala/fasthttp"
)

// benchPredict measures POST /v1/predict through the handler (no network):
// parse, authorize, one store lookup, model, answer.
func benchPredict(b *testing.B, st featurestore.Store, rows int) {
	users := map[string]map[string]any{}
	for i := range 1000 {
		f := buyer()
		f["orders_30d"] = float64(i % 7)
		users[strconv.Itoa(i)] = f
	}
	seed(b, st, users, nil)
	srv, err := scorer.New(newConfig(b, testConfig), st, scorer.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		b.Fatal(err)
	}
	bodies := make([][]byte, 64)
	for i := range bodies {
		var body bytes.Buffer
		body.WriteString(`{"model":"purchase_propensity","features":[`)
		for r := range rows {
			if r > 0 {
				body.WriteByte(',')
			}
			body.WriteString(`{"user":{"id":` + strconv.Itoa((i*rows+r)*37%1000) + `}}`)
		}
		body.WriteString(`]}`)
		bodies[i] = body.Bytes()
	}
	var ctx fasthttp.RequestCtx
	// A context as a server hands it (Done works: go-redis watches it).
	ctx.Init(&fasthttp.Request{}, nil, nil)
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/v1/predict")
	ctx.Request.Header.Set("Authorization", "Bearer read-key")
	ctx.Request.Header.SetContentType("application/json")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctx.Request.SetBody(bodies[i%len(bodies)])
		ctx.Response.Reset()
		srv.Handler(&ctx)
		if ctx.Response.StatusCode() != 200 || !bytes.Contains(ctx.Response.Body(), []byte(`"model_used":true`)) {
			b.Fatalf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/prediction")
}

func BenchmarkPredictMemory(b *testing.B) { benchPredict(b, newMemStore(), 1) }
func BenchmarkPredictMemory10(b *testing.B) {
	benchPredict(b, newMemStore(), 10)
}

func BenchmarkPredictPebble(b *testing.B) {
	st, err := featurestore.OpenPebble(b.TempDir(), featurestore.PebbleOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchPredict(b, st, 1)
}

// BenchmarkPredictRedis is one caller at a time with the near cache off:
// each lookup is its own MGET round trip, so allocs/op counts the whole
// Redis read path.
func BenchmarkPredictRedis(b *testing.B) { benchPredictRedis(b, -1) }

// BenchmarkPredictRedisNear: the same with the near cache, which holds
// the 1,000 users after their first reads.
func BenchmarkPredictRedisNear(b *testing.B) { benchPredictRedis(b, 0) }

func benchPredictRedis(b *testing.B, cacheSize int64) {
	addr, db := testenv.RedisDB(b)
	st, err := featurestore.OpenRedis(config.Redis{Addr: addr, DB: db}, featurestore.RedisOptions{CacheSize: cacheSize})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchPredict(b, st, 1)
}

// BenchmarkModelOnly is the same-run baseline: the demo model alone.
func BenchmarkModelOnly(b *testing.B) {
	data, err := os.ReadFile("../examples/ecommerce/models/purchase_propensity.json")
	if err != nil {
		b.Fatal(err)
	}
	m, err := model.Parse(data, "")
	if err != nil {
		b.Fatal(err)
	}
	x := []float64{3, 640, 9, 1, 12, 2}
	out := make([]float64, 1)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		x[0] = float64(i % 7)
		m.Predict(x, out)
	}
}
