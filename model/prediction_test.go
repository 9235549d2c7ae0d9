package model

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"
)

// TestPredictionRecordCodec: what the scorer's AppendPrediction writes is
// plain JSON that DecodePrediction reads back whole, and Encode writes the
// same bytes for the same record.
func TestPredictionRecordCodec(t *testing.T) {
	at := time.Date(2024, 3, 1, 10, 0, 0, 123e6, time.UTC)
	score := 0.75
	r := PredictionRecord{UUID: "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d", Model: "churn", Version: "a1b2c3d4e5f6", Entity: "user",
		ID: `u"1`, Score: &score, ModelUsed: true, At: at}
	names := []string{"orders_30d", "revenue_30d"}
	x := []float64{2, math.NaN()}
	b := AppendPrediction(nil, &r, names, x, []byte(`"stay"`))
	if !json.Valid(b) {
		t.Fatalf("not JSON: %s", b)
	}
	got, err := DecodePrediction(b)
	if err != nil {
		t.Fatal(err)
	}
	two := 2.0
	want := r
	want.Features = map[string]*float64{"orders_30d": &two, "revenue_30d": nil}
	want.Prediction = "stay"
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip of %s:\n got %+v\nwant %+v", b, got, want)
	}
	enc, err := want.Encode()
	if err != nil || string(enc) != string(b) {
		t.Fatalf("Encode: %s %v, want %s", enc, err, b)
	}
	// The default answered: no score, model_used false.
	r.Score, r.ModelUsed = nil, false
	b = AppendPrediction(nil, &r, nil, nil, []byte(`0`))
	got, err = DecodePrediction(b)
	if err != nil || got.Score != nil || got.ModelUsed || got.Prediction != 0.0 || len(got.Features) != 0 {
		t.Fatalf("default: %+v %v from %s", got, err, b)
	}
	if _, raw, _ := DecodePredictionRaw(b); string(raw.Score) != "null" || raw.Features == nil {
		t.Fatalf("default, raw: score %q features %q", raw.Score, raw.Features)
	}
}

// TestDecodePredictionTolerant: records an app produced by hand.
func TestDecodePredictionTolerant(t *testing.T) {
	f := func(value string, want PredictionRecord, scores, prediction string) {
		t.Helper()
		got, raw, err := DecodePredictionRaw([]byte(value))
		if err != nil {
			t.Fatalf("%s: %v", value, err)
		}
		if !reflect.DeepEqual(got, want) || string(raw.Score) != scores || raw.PredictionText() != prediction {
			t.Errorf("%s:\n got %+v scores %q prediction %q\nwant %+v scores %q prediction %q", value, got, raw.Score, raw.PredictionText(), want, scores, prediction)
		}
	}
	p := func(f float64) *float64 { return &f }
	f(`{"uuid":"p1","model":"churn","version":3,"entity":"user","id":612,"features":{"a":1},"score":[0.25,0.75],"prediction":"stay","model_used":true,"at":1709287200000}`,
		PredictionRecord{UUID: "p1", Model: "churn", Version: "3", Entity: "user", ID: "612", Score: p(0.25), ModelUsed: true, At: time.UnixMilli(1709287200000).UTC()},
		"[0.25,0.75]", "stay")
	f(`{"model":"churn","id":"u1","score":0.9,"prediction":1,"model_used":false,"at":"2024-03-01T10:00:00Z"}`,
		PredictionRecord{Model: "churn", Entity: "user", ID: "u1", Score: p(0.9), At: time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)},
		"0.9", "1")
	f(`{"model":"m","id":"a","entity":"account","score":"0.5","prediction":{"k":[1,2]},"model_used":0,"at":"yesterday"}`,
		PredictionRecord{Model: "m", Entity: "account", ID: "a", Score: p(0.5)},
		`"0.5"`, `{"k":[1,2]}`)
	f(`{"model":"m","id":"a","score":null}`, PredictionRecord{Model: "m", Entity: "user", ID: "a", ModelUsed: true}, "null", "")
	if _, _, err := DecodePredictionRaw([]byte(`[1]`)); err == nil {
		t.Error("a list decoded as a prediction record")
	}
}
