package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/examples"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// TestLoadtestPredictStore: the store `pulse loadtest predict -embedded`
// measures holds what the stream would write, so the scorer answers every
// user with the model (a store missing an input would measure the
// model_used=false path instead).
func TestLoadtestPredictStore(t *testing.T) {
	ctx := context.Background()
	url, key, _, stop, err := embeddedScorer(ctx, embeddedOptions{kind: "pebble", users: 300, rowCacheMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	used := 0
	for i := range 300 {
		body := `{"model":"purchase_propensity","features":[{"user":{"id":"` + strconv.Itoa(i) + `"}}]}`
		req, _ := http.NewRequest("POST", url+"/v1/predict", bytes.NewReader([]byte(body)))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var out []struct {
			ModelUsed bool   `json:"model_used"`
			Reason    string `json:"reason"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &out) != nil || len(out) != 1 {
			t.Fatalf("user %d: %d %s", i, resp.StatusCode, b)
		}
		if !out[0].ModelUsed {
			t.Fatalf("user %d: model not used: %s", i, out[0].Reason)
		}
		used++
	}
	t.Logf("%d of 300 users scored by the model", used)

	// Each vector holds every feature of the example config, as the
	// stream writes them, and the inputs the model refreshes at read time
	// come from their stored sources (last_order_at for
	// days_since_last_order): numbers, not nulls.
	cfg := exampleConfig(t)
	buyers := 0
	for i := range 300 {
		req, _ := http.NewRequest("GET", url+"/v1/entities/user/"+strconv.Itoa(i), nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Features map[string]any `json:"features"`
		}
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range cfg.Features {
			if _, ok := v.Features[f.Name]; !ok {
				t.Fatalf("user %d: no %s in %v", i, f.Name, v.Features)
			}
		}
		days, ok := v.Features["days_since_last_order"].(float64)
		if !ok {
			t.Fatalf("user %d: days_since_last_order %v", i, v.Features["days_since_last_order"])
		}
		if days >= 0 {
			buyers++
		}
	}
	if buyers < 100 || buyers > 280 {
		t.Fatalf("%d of 300 users ever ordered: not a plausible shop", buyers)
	}
}

func exampleConfig(t *testing.T) *config.Config {
	t.Helper()
	data, err := examples.Ecommerce.ReadFile("ecommerce/pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data, "example")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRewriteUsers: -rewrites writes about the rate asked for, fresh
// vectors of users within range, as the stream would.
func TestRewriteUsers(t *testing.T) {
	cfg := exampleConfig(t)
	st, err := featurestore.OpenPebble(t.TempDir(), featurestore.PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const users, rate = 50, 2000.0
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	var done atomic.Int64
	if err := rewriteUsers(ctx, cfg, st, users, rate, &done); err != nil {
		t.Fatal(err)
	}
	if n := done.Load(); n < rate*0.3 || n > rate*0.6 {
		t.Fatalf("rewrote %d vectors in 0.5 s at %g/s", n, rate)
	}
	fresh := 0
	for i := range users {
		v, err := st.Get(context.Background(), "user", strconv.Itoa(i))
		if errors.Is(err, featurestore.ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if v.UpdatedAt.Before(start.Truncate(time.Millisecond)) || len(v.Features) == 0 {
			t.Fatalf("user %d: %+v", i, v)
		}
		fresh++
	}
	if fresh < users*9/10 {
		t.Fatalf("%d of %d users rewritten", fresh, users)
	}
}

// TestLoadtestRedisFloor: with -store redis, the embedded scorer and the
// -floor reader share the loadtest's Redis store: the floor finds every
// user the scorer was filled with, and says so for one it was not.
func TestLoadtestRedisFloor(t *testing.T) {
	addr := testenv.StartRedis(t).Addr()
	ctx := context.Background()
	_, _, store, stop, err := embeddedScorer(ctx, embeddedOptions{kind: "redis", redisAddr: addr, users: 20, rowCacheMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if _, ok := store.(*featurestore.Redis); !ok {
		t.Fatalf("store is a %T, want the Redis store", store)
	}
	read, closeFloor, err := redisFloor(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFloor()
	for user := range uint64(20) {
		if err := read(ctx, user); err != nil {
			t.Fatalf("floor read of user %d: %v", user, err)
		}
	}
	if err := read(ctx, 20); err == nil {
		t.Fatal("floor read of user 20, never written: no error")
	}
}
