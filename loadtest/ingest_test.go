package loadtest

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/valyala/fasthttp"
)

// TestIngest runs the whole `pulse loadtest ingest` against an in-process
// broker and an HTTP server that counts the events it is posted: every
// phase must have gone through, and the open loop must have posted what it
// reports.
func TestIngest(t *testing.T) {
	kf, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var events, badAuth atomic.Int64
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != "/v1/batch" || string(ctx.Request.Header.Peek("Authorization")) != "Basic azo=" {
			badAuth.Add(1)
			ctx.SetStatusCode(401)
			return
		}
		events.Add(int64(bytes.Count(ctx.PostBody(), []byte(`"messageId"`))))
		ctx.SetBodyString(`{"success":true}`)
	}}
	go srv.Serve(ln)
	defer srv.Shutdown()

	o := IngestOptions{URL: "http://" + ln.Addr().String(), WriteKey: "k", Brokers: kf.ListenAddrs(),
		Batch: 10, Rate: 2000, Duration: 300 * time.Millisecond, Users: 50, Connections: 2}
	rep, err := Ingest(context.Background(), o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if badAuth.Load() != 0 {
		t.Fatalf("%d requests without the write key or to the wrong path", badAuth.Load())
	}
	if rep.Baseline.OK == 0 {
		t.Errorf("baseline produced nothing: %v", rep.Baseline)
	}
	// 2,000 events/s in batches of 10: 200 requests/s, 60 in 300 ms after
	// the warm-up.
	ol := rep.OpenLoop
	if ol.Errors != 0 || ol.Sent != 60 || ol.OK != 60 || ol.Items != 600 {
		t.Errorf("open loop: %v (first error %v); want 60 requests of 10 events", ol, ol.FirstErr)
	}
	if rep.Saturation.OK == 0 || rep.Saturation.Errors != 0 {
		t.Errorf("saturation: %v (first error %v)", rep.Saturation, rep.Saturation.FirstErr)
	}
	if want := (ol.OK + 200 + rep.Saturation.OK) * 10; events.Load() != want {
		t.Errorf("server got %d events, want %d (open loop with its 1 s warm-up, and saturation)", events.Load(), want)
	}
}
