package loadtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// fakeScorer answers predictions; users >= known get model_used:false.
func fakeScorer(t *testing.T, known int) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		n.Add(1)
		if string(ctx.Request.Header.Peek("Authorization")) != "Bearer k" || string(ctx.Path()) != "/v1/predict" {
			ctx.SetStatusCode(401)
			return
		}
		body := ctx.PostBody()
		i := bytes.Index(body, []byte(`"id":`))
		id := body[i+5 : bytes.IndexByte(body[i:], '}')+i]
		if user, err := strconv.Atoi(string(id)); err == nil && user < known {
			ctx.SetBodyString(`[{"model_used":true,"prediction":"yes","score":0.5,"uuid":"x"}]`)
		} else {
			ctx.SetBodyString(`[{"model_used":false,"prediction":"no","score":null,"uuid":"x"}]`)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return "http://" + ln.Addr().String(), &n
}

func TestPredict(t *testing.T) {
	url, n := fakeScorer(t, 5)
	o := PredictOptions{URL: url, Key: "k", Users: 5, Rates: []float64{500}, Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond, Connections: 2}
	rep, err := Predict(context.Background(), o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ph := rep.Phases[0]
	if ph.Scorer.OK < 90 || ph.Scorer.Errors != 0 || ph.Baseline.OK < 90 || rep.ScorerSaturation.OK == 0 || rep.BaselineSaturation.OK == 0 {
		t.Errorf("phase: scorer %v; bare %v; saturation %v / %v", ph.Scorer, ph.Baseline, rep.ScorerSaturation, rep.BaselineSaturation)
	}
	if n.Load() < ph.Scorer.Sent {
		t.Errorf("server saw %d requests, generator sent %d", n.Load(), ph.Scorer.Sent)
	}

	// Users the store does not hold are errors: the figures would not be
	// of predictions.
	o.Users = 9
	rep, err = Predict(context.Background(), o, io.Discard)
	if err == nil && rep.Phases[0].Scorer.Errors == 0 {
		t.Errorf("model_used:false answers were not counted as errors")
	}
}

// TestPredictFloor: with a Floor, each phase also measures a bare handler
// that calls it with the request's user first, and a failing read is an
// error of that side.
func TestPredictFloor(t *testing.T) {
	url, _ := fakeScorer(t, 5)
	var calls atomic.Int64
	var bad atomic.Bool
	floor := func(ctx context.Context, user uint64) error {
		calls.Add(1)
		if user >= 5 {
			bad.Store(true)
		}
		return nil
	}
	o := PredictOptions{URL: url, Key: "k", Users: 5, Rates: []float64{500}, Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond, Connections: 2, Rounds: 2, Floor: floor}
	rep, err := Predict(context.Background(), o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ph := rep.Phases[0]
	if ph.Floor == nil || ph.Floor.OK < 90 || ph.Floor.Errors != 0 {
		t.Fatalf("floor side: %v", ph.Floor)
	}
	if calls.Load() < ph.Floor.Sent || bad.Load() {
		t.Errorf("floor read %d times for %d requests; a user out of range: %v", calls.Load(), ph.Floor.Sent, bad.Load())
	}

	o.Floor = func(context.Context, uint64) error { return errors.New("store down") }
	rep, err = Predict(context.Background(), o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f := rep.Phases[0].Floor; f.Errors == 0 || f.OK != 0 {
		t.Errorf("a failing floor read answered: %v", f)
	}
}
