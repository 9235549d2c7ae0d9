package system

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/loadtest"
)

// TestLoadtestPredictStore: the store `pulse loadtest predict -embedded`
// measures holds what the stream would write, so the scorer answers every
// user with the model (a store missing an input would measure the
// model_used=false path instead).
func TestLoadtestPredictStore(t *testing.T) {
	ctx := context.Background()
	sys, err := PredictTarget(ctx, PredictTargetOptions{Store: "pebble", Users: 300, RowCacheMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	url, key := sys.ScorerURL(), sys.Config.KeyWithScope(config.ScopeRead)
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
	cfg, err := Example(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
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

// TestLoadtestRedisFloor: with -store redis, the embedded scorer and the
// -floor reader share the loadtest's Redis store: the floor finds every
// user the scorer was filled with, and says so for one it was not.
func TestLoadtestRedisFloor(t *testing.T) {
	addr := testenv.StartRedis(t).Addr()
	ctx := context.Background()
	sys, err := PredictTarget(ctx, PredictTargetOptions{Store: "redis", RedisAddr: addr, Users: 20, RowCacheMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	if _, ok := sys.Store.(*featurestore.Redis); !ok {
		t.Fatalf("store is a %T, want the Redis store", sys.Store)
	}
	read, closeFloor, err := loadtest.RedisFloor(addr, 0)
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
