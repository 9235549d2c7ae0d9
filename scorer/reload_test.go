package scorer_test

import (
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/scorer"
)

func TestReload(t *testing.T) {
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"612": buyer()}, nil)
	cfg := newConfig(t, testConfig)
	h := start(t, cfg, st, scorer.WithConfigPath(filepath.Join(cfg.Dir, "pulse.yaml")))
	predict := func() answer {
		t.Helper()
		code, body := h.do("POST", "/v1/predict", "read-key", `{"model":"purchase_propensity","features":[{"user":{"id":612}}]}`)
		if code != 200 {
			t.Fatalf("predict: %d %s", code, body)
		}
		return decodeAnswers(t, body)[0]
	}
	reload := func(key string) (int, reloadAnswer) {
		t.Helper()
		code, body := h.do("POST", "/v1/admin/reload", key, "")
		var a reloadAnswer
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			t.Fatalf("reload answer %d %s: %v", code, body, err)
		}
		return code, a
	}
	before := predict()
	checkUsed(t, "before", before, demoScore(t, buyer()))

	// Unchanged files: nothing changes.
	code, a := reload("admin-key")
	if code != 200 || !a.Success || len(a.Models) != 2 || a.Models[0].Changed {
		t.Fatalf("no-op reload: %d %+v", code, a)
	}
	oldVersion := a.Models[0].Version

	// Requests keep flowing while models are swapped.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 100)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := http.Post(h.url+"/v1/predict?api_key=read-key", "application/json",
				strings.NewReader(`{"model":"purchase_propensity","features":[{"user":{"id":612}}]}`))
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("predict during reload: %d", resp.StatusCode)
				return
			}
		}
	}()

	// A new model file: served after reload, without a restart.
	path := filepath.Join(cfg.Dir, "models/purchase_propensity.json")
	writeFile(t, path, `{"intercept": 2, "weights": {"orders_30d": 0}}`)
	code, a = reload("admin-key")
	if code != 200 || !a.Models[0].Changed || a.Models[0].Version == oldVersion || a.Models[0].Format != "logistic" {
		t.Fatalf("reload: %d %+v", code, a)
	}
	if got := predict(); math.Abs(*got.Score-1/(1+math.Exp(-2))) > 1e-12 || got.Prediction != "yes" {
		t.Fatalf("after reload: %+v", got)
	}

	// A broken file: the previous version keeps serving, the answer and the
	// metric say why.
	failures := testenv.Gathered(t, "pulse_scorer_model_load_failures_total", map[string]string{"model": "purchase_propensity"})
	writeFile(t, path, `{"learner": {broken`)
	code, a = reload("admin-key")
	if code != 500 || a.Success || !strings.Contains(a.Error, "1 of 2 models failed") || !strings.Contains(a.Models[0].Error, "keeps serving") {
		t.Fatalf("failed reload: %d %+v", code, a)
	}
	if got := predict(); math.Abs(*got.Score-1/(1+math.Exp(-2))) > 1e-12 {
		t.Fatalf("after failed reload the old model must serve: %+v", got)
	}
	if n := testenv.Gathered(t, "pulse_scorer_model_load_failures_total", map[string]string{"model": "purchase_propensity"}); n != failures+1 {
		t.Errorf("load failures metric: %v, want %v", n, failures+1)
	}
	os.Remove(path)
	if code, _ := reload("admin-key"); code != 500 {
		t.Errorf("missing file: %d", code)
	}
	if got := predict(); !got.ModelUsed {
		t.Errorf("after a missing file the old model must serve: %+v", got)
	}

	// The config file is re-read: a new key works after reload.
	yaml := strings.Replace(testConfig, "keys:\n", "keys:\n  - {name: new, key: new-key, scopes: [read]}\n", 1)
	writeFile(t, filepath.Join(cfg.Dir, "pulse.yaml"), yaml)
	copyFile(t, "../examples/ecommerce/models/purchase_propensity.json", path)
	if code, a := reload("admin-key"); code != 200 {
		t.Fatalf("reload with config: %d %+v", code, a)
	}
	if code, _ := h.do("GET", "/v1/entities/user/612", "new-key", ""); code != 200 {
		t.Errorf("key added to the config: %d", code)
	}
	checkUsed(t, "demo model back", predict(), demoScore(t, buyer()))

	// A broken config keeps everything as it was.
	writeFile(t, filepath.Join(cfg.Dir, "pulse.yaml"), "keys: [oops")
	if code, _ := reload("admin-key"); code != 500 {
		t.Errorf("broken config: %d", code)
	}
	checkUsed(t, "after broken config", predict(), demoScore(t, buyer()))

	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	if code, _ := h.do("POST", "/v1/admin/reload", "read-key", ""); code != 403 {
		t.Errorf("reload with a read key: %d", code)
	}
	if code, _ := h.do("GET", "/v1/admin/reload", "admin-key", ""); code != 405 {
		t.Errorf("GET reload: %d", code)
	}
}

type reloadAnswer struct {
	Success bool
	Error   string
	Models  []scorer.ModelStatus
}
