package scorer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/model"
)

// served is one loaded model with everything the hot path needs precomputed.
// It is immutable once built.
type served struct {
	name    string
	entity  string
	version string // first 12 hex digits of the file's SHA-256
	format  string
	path    string
	loaded  time.Time
	m       *model.Model
	// inputs[i] is the feature that feeds model input i.
	inputs []string
	// labels name the outputs; nil means the prediction is the score.
	labels    []string
	threshold float64
	binary    bool // one output turned into labels[0] or labels[1]
	// defaultJSON is the config's default, encoded once.
	defaultJSON []byte
	labelJSON   [][]byte

	evalSeconds prometheus.Observer
	used        prometheus.Counter
	unused      prometheus.Counter

	fresh freshSlot // the inputs' read-time refresh under the derivers in force
}

// modelSet is what is serving: swapped as a whole on reload.
type modelSet struct {
	byName map[string]*served
	// failed says why a configured model has no version serving.
	failed map[string]string
}

// ModelStatus is one model's state after a load, as the reload answer lists it.
type ModelStatus struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	Format  string `json:"format,omitempty"`
	// Changed is true when this load put a new version in service.
	Changed bool `json:"changed"`
	// Error says why the file could not be used; the previous version, if
	// any, keeps serving.
	Error string `json:"error,omitempty"`
}

// loadModels builds the set for cfgs, reusing models from prev whose file
// did not change and keeping prev's version of any model that fails.
func loadModels(cfg *config.Config, cfgs []config.Model, prev *modelSet) (*modelSet, []ModelStatus) {
	next := &modelSet{byName: map[string]*served{}, failed: map[string]string{}}
	status := make([]ModelStatus, 0, len(cfgs))
	for _, mc := range cfgs {
		var old *served
		if prev != nil {
			old = prev.byName[mc.Name]
		}
		s, err := loadModel(cfg, mc, old)
		st := ModelStatus{Name: mc.Name}
		switch {
		case err != nil:
			reloadFailures.WithLabelValues(mc.Name).Inc()
			st.Error = err.Error()
			if old != nil {
				next.byName[mc.Name] = old
				st.Version, st.Format = old.version, old.format
				st.Error += fmt.Sprintf(" (version %s keeps serving)", old.version)
			} else {
				next.failed[mc.Name] = err.Error()
			}
		default:
			next.byName[mc.Name] = s
			st.Version, st.Format = s.version, s.format
			st.Changed = s != old
		}
		status = append(status, st)
	}
	return next, status
}

// loadModel reads and checks one model. When the file's hash and the config
// are unchanged it returns old.
func loadModel(cfg *config.Config, mc config.Model, old *served) (*served, error) {
	path := cfg.Resolve(mc.Path)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read model %s: %w", mc.Name, err)
	}
	sum := sha256.Sum256(data)
	version := hex.EncodeToString(sum[:6])
	if old != nil && old.version == version && sameConfig(old, mc) {
		return old, nil
	}
	s, err := buildModel(mc, path, data, version)
	if err != nil {
		return nil, err
	}
	s.register(old)
	return s, nil
}

func parseModel(cfg *config.Config, mc config.Model) (*served, error) {
	path := cfg.Resolve(mc.Path)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read model %s: %w", mc.Name, err)
	}
	return buildModel(mc, path, data, "")
}

// buildModel parses data and checks it against mc.
func buildModel(mc config.Model, path string, data []byte, version string) (*served, error) {
	m, err := model.Parse(data, mc.Format)
	if err != nil {
		return nil, fmt.Errorf("model %s (%s): %w", mc.Name, path, err)
	}
	s := &served{
		name:      mc.Name,
		entity:    mc.Entity,
		version:   version,
		format:    m.Format(),
		path:      path,
		loaded:    time.Now(),
		m:         m,
		labels:    mc.Labels,
		threshold: mc.Threshold,
	}
	if s.entity == "" {
		s.entity = "user"
	}
	if s.threshold == 0 {
		s.threshold = 0.5
	}
	if err := s.mapInputs(mc); err != nil {
		return nil, fmt.Errorf("model %s (%s): %w", mc.Name, path, err)
	}
	if err := s.checkLabels(mc); err != nil {
		return nil, fmt.Errorf("model %s (%s): %w", mc.Name, path, err)
	}
	return s, nil
}

// CheckModel loads the model file mc names and checks it against the
// config exactly as the scorer will at start and reload: the format, the
// feature count and order, the labels. Meant for `pulse validate`.
func CheckModel(cfg *config.Config, mc config.Model) error {
	_, err := parseModel(cfg, mc)
	return err
}

// register publishes the model's metrics series.
func (s *served) register(old *served) {
	s.evalSeconds = modelSeconds.WithLabelValues(s.name)
	s.used = predictions.WithLabelValues(s.name, "true")
	s.unused = predictions.WithLabelValues(s.name, "false")
	if old != nil {
		modelInfo.DeleteLabelValues(old.name, old.version, old.format)
	}
	modelInfo.WithLabelValues(s.name, s.version, s.format).Set(1)
}

func sameConfig(s *served, mc config.Model) bool {
	return s.entity == mc.Entity && s.threshold == mc.Threshold && slices.Equal(s.labels, mc.Labels) &&
		string(s.defaultJSON) == string(mustJSON(mc.Default, mc.Labels)) && inputsFromConfig(s, mc)
}

func inputsFromConfig(s *served, mc config.Model) bool {
	if s.format == model.FormatLogistic {
		return true // mapped by name from the file, which is unchanged
	}
	return slices.Equal(s.inputs, mc.Features)
}

// mapInputs decides which feature feeds each model input. Tree models take
// the config's order, which must agree with the names saved in the file (when
// it has them): a silent reorder would score every row wrongly. Logistic
// models name their weights, so they are mapped by name.
func (s *served) mapInputs(mc config.Model) error {
	n := s.m.NumFeatures()
	names := s.m.FeatureNames()
	if s.format == model.FormatLogistic {
		for _, name := range names {
			if !slices.Contains(mc.Features, name) {
				return fmt.Errorf("the model has a weight for %q, which is not in the config's features %v", name, mc.Features)
			}
		}
		s.inputs = names
		return nil
	}
	if len(mc.Features) != n {
		return fmt.Errorf("the model reads %d features but the config lists %d (%s)", n, len(mc.Features), strings.Join(mc.Features, ", "))
	}
	if len(names) == n && !slices.Equal(names, mc.Features) {
		return fmt.Errorf("the model was trained on features [%s] but the config lists [%s]: list them in the model's order",
			strings.Join(names, ", "), strings.Join(mc.Features, ", "))
	}
	s.inputs = mc.Features
	return nil
}

func (s *served) checkLabels(mc config.Model) error {
	k := s.m.NumClass()
	switch {
	case len(mc.Labels) == 0:
	case k == 1 && len(mc.Labels) == 2:
		s.binary = true
	case k == 1:
		return fmt.Errorf("a model with one output needs 2 labels [negative, positive], got %d", len(mc.Labels))
	case len(mc.Labels) != k:
		return fmt.Errorf("the model has %d classes but the config lists %d labels", k, len(mc.Labels))
	}
	for _, l := range mc.Labels {
		b, _ := json.Marshal(l)
		s.labelJSON = append(s.labelJSON, b)
	}
	s.defaultJSON = mustJSON(mc.Default, mc.Labels)
	return nil
}

// mustJSON encodes the answer given when the model cannot be used: the
// configured default, or else the negative label, or else null.
func mustJSON(def any, labels []string) []byte {
	if def == nil {
		if len(labels) > 0 {
			def = labels[0]
		} else {
			return []byte("null")
		}
	}
	b, err := json.Marshal(def)
	if err != nil {
		return []byte("null")
	}
	return b
}
