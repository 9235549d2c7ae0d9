package loadtest

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// TestIngest runs the whole `pulse loadtest ingest` against an in-process
// broker and an HTTP server that counts the events it is posted: every
// phase must have gone through, and the open loop must have posted what it
// reports.
func TestIngest(t *testing.T) {
	var events, badAuth atomic.Int64
	kf, url := ingestFixture(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != "/v1/batch" || string(ctx.Request.Header.Peek("Authorization")) != "Basic azo=" {
			badAuth.Add(1)
			ctx.SetStatusCode(401)
			return
		}
		events.Add(int64(bytes.Count(ctx.PostBody(), []byte(`"messageId"`))))
		ctx.SetBodyString(`{"success":true}`)
	})
	o := IngestOptions{URL: url, WriteKey: "k", Brokers: kf.ListenAddrs(),
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

// TestIngestFloor: with Floor the open loop alternates between ingest and
// the floor server, started by the load test or serving on its own
// (ServeIngestFloor, for FloorURL), and the floor answers only after Kafka
// took each request's records: every record it acknowledged is in the
// topic.
func TestIngestFloor(t *testing.T) {
	t.Run("in the load test", func(t *testing.T) { testIngestFloor(t, false) })
	t.Run("on its own", func(t *testing.T) { testIngestFloor(t, true) })
}

func testIngestFloor(t *testing.T, own bool) {
	var events atomic.Int64
	kf, url := ingestFixture(t, func(ctx *fasthttp.RequestCtx) {
		events.Add(int64(bytes.Count(ctx.PostBody(), []byte(`"messageId"`))))
		ctx.SetBodyString(`{"success":true}`)
	})
	o := IngestOptions{URL: url, WriteKey: "k", Brokers: kf.ListenAddrs(),
		Batch: 10, Rate: 2000, Duration: 300 * time.Millisecond, Users: 50, Connections: 2,
		Floor: true, Rounds: 2, Warmup: 900 * time.Millisecond}
	if own {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() {
			served <- ServeIngestFloor(ctx, IngestOptions{Brokers: o.Brokers, Batch: o.Batch, Users: o.Users}, ln)
		}()
		defer func() {
			cancel()
			if err := <-served; err != nil {
				t.Errorf("ServeIngestFloor: %v", err)
			}
		}()
		o.FloorURL = "http://" + ln.Addr().String()
	}
	var out bytes.Buffer
	rep, err := Ingest(context.Background(), o, &out)
	if err != nil {
		t.Fatal(err)
	}
	// Two turns a side of 150 ms at 200 requests/s, each after a 1 s
	// warm-up: 30 measured requests and 200 warm-up requests a turn.
	for _, r := range []*Result{rep.OpenLoop, rep.Floor} {
		if r.Errors != 0 || r.OK != 60 || r.Items != 600 {
			t.Errorf("%s: %v (first error %v); want 60 requests of 10 events", r.Name, r, r.FirstErr)
		}
	}
	// The warm-up: 300 ms of raw produce, then two turns a side of 300 ms
	// after a 1 s warm-up each.
	if rep.WarmupProduced == 0 || rep.WarmupRequests != 520 || rep.WarmupFloorRequests != 520 {
		t.Errorf("warm-up: %d records produced, %d requests to ingest, %d to the floor; want some, 520, 520",
			rep.WarmupProduced, rep.WarmupRequests, rep.WarmupFloorRequests)
	}
	if want := (rep.WarmupRequests + rep.OpenLoop.OK + 400 + rep.Saturation.OK) * 10; events.Load() != want {
		t.Errorf("ingest got %d events, want %d", events.Load(), want)
	}
	// The warm-up's and the baseline's records, each with the record that
	// starts them, the floor's first record and the floor's records.
	want := rep.WarmupProduced + 1 + rep.Baseline.OK + 1 + 1 + (rep.WarmupFloorRequests+rep.Floor.OK+400)*10
	if got := topicRecords(t, kf.ListenAddrs(), "pulse.loadtest"); got != want {
		t.Errorf("pulse.loadtest holds %d records, want %d", got, want)
	}
	if !bytes.Contains(out.Bytes(), []byte("CPU per event (floor)")) {
		t.Errorf("no CPU line for the floor:\n%s", out.String())
	}
	if !bytes.Contains(out.Bytes(), []byte("ingest p99")) {
		t.Errorf("no ratio of ingest's p99 to the floor's:\n%s", out.String())
	}
}

// topicRecords counts the records in topic.
func topicRecords(t *testing.T, brokers []string, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// ingestFixture starts an in-process broker and an HTTP server standing in
// for ingest, both closed when the test ends.
func ingestFixture(t *testing.T, handler fasthttp.RequestHandler) (*kfake.Cluster, string) {
	t.Helper()
	kf, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return kf, "http://" + ln.Addr().String()
}
