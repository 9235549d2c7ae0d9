package scorer

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"runtime/trace"
	"strconv"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/internal/jsonstr"
	"github.com/pulse-rt/pulse/internal/uuidtext"
	"github.com/valyala/fasthttp"
)

// scratch is one request's reusable memory.
type scratch struct {
	body  predictBody
	ids   []string
	x     []float64
	out   []float64
	uuids []byte
	buf   []byte
	miss  []string
	fresh []any // the inputs computed as of the request
	// the rows' encoded vectors (raw[i] nil: not in the store), in rawBuf
	raw    [][]byte
	rawBuf []byte
	picked []featurestore.Picked
	env    map[string]any // a Refresher's stored inputs
}

// lookup reads the rows' encoded vectors into sc.raw, each the vector of
// the person the row's id was merged into, if any (followMerged). A store
// that cannot hand out encodings has its vectors encoded here.
func (s *Server) lookup(ctx *fasthttp.RequestCtx, entity string, sc *scratch) error {
	var err error
	if sc.rawBuf, sc.raw, err = s.getRaw(entity, sc.ids, sc.rawBuf[:0], sc.raw); err != nil {
		return err
	}
	return s.followMerged(entity, sc)
}

// getRaw appends the encoded vectors of ids to buf, raw[i] nil for one
// not in the store.
func (s *Server) getRaw(entity string, ids []string, buf []byte, raw [][]byte) ([]byte, [][]byte, error) {
	if rg, ok := s.store.(featurestore.RawGetter); ok {
		return rg.AppendRaw(storeCtx, entity, ids, buf, raw)
	}
	vecs, found, err := s.store.GetMany(storeCtx, entity, ids)
	if err != nil {
		return buf, raw, err
	}
	raw = raw[:0]
	for i := range vecs {
		if !found[i] {
			raw = append(raw, nil)
			continue
		}
		at := len(buf)
		buf = featurestore.Encode(vecs[i], buf)
		raw = append(raw, buf[at:len(buf):len(buf)])
	}
	return buf, raw, nil
}

// followMerged replaces the vector of each row whose entity was merged
// into another person (identity resolution) by that person's, following
// a chain of merges up to 8 hops; a person whose vector is not written
// yet leaves the row's own. Rows of entities never merged cost one flags
// check.
func (s *Server) followMerged(entity string, sc *scratch) error {
	var rows []int
	var ids []string
	for range 8 {
		rows, ids = rows[:0], ids[:0]
		for i, b := range sc.raw {
			if c := featurestore.CanonicalOf(b); c != "" {
				rows, ids = append(rows, i), append(ids, c)
			}
		}
		if len(rows) == 0 {
			return nil
		}
		_, raw, err := s.getRaw(entity, ids, nil, nil)
		if err != nil {
			return err
		}
		moved := false
		for k, i := range rows {
			if raw[k] != nil {
				sc.raw[i], moved = raw[k], true
			}
		}
		if !moved {
			return nil
		}
	}
	return nil
}

// Prediction is one answer of POST /v1/predict, in the order of the request's rows.
type Prediction struct {
	ModelUsed bool `json:"model_used"`
	// Prediction is the label (classification), the score (regression or no
	// labels), or the model's default when ModelUsed is false.
	Prediction any `json:"prediction"`
	// Score is the probability of the positive label (binary), of the
	// predicted class (multi-class), or the predicted value; null when the
	// model was not used.
	Score *float64 `json:"score"`
	// Scores are the class probabilities of a multi-class model.
	Scores []float64 `json:"scores,omitempty"`
	UUID   string    `json:"uuid"`
	// Reason says why the model was not used.
	Reason string `json:"reason,omitempty"`
}

func (s *Server) predict(ctx *fasthttp.RequestCtx) {
	// A region of an execution trace (`pulse loadtest predict -trace`,
	// tools/traceslow): nothing while no trace is being written.
	defer trace.StartRegion(ctx, "predict").End()
	sc := s.scratch.Get().(*scratch)
	defer s.scratch.Put(sc)
	req := &sc.body
	// The key first: one in the body is read without parsing the rest, so
	// an unauthenticated caller costs nothing more.
	body := ctx.PostBody()
	secret := httpapi.KeyFromHeaders(ctx)
	if secret == "" {
		secret, _ = event.BodyString(body, "api_key")
	}
	if _, ok := s.auth.Authorize(ctx, secret, config.ScopeRead); !ok {
		return
	}
	err := parsePredict(body, req, maxPredictRows)
	if err != nil && !errors.Is(err, errRows) {
		httpapi.WriteErr(ctx, fasthttp.StatusBadRequest, err)
		return
	}
	if err != nil {
		httpapi.WriteFieldError(ctx, fasthttp.StatusRequestEntityTooLarge, "features", fmt.Sprintf("over the %d row limit", maxPredictRows))
		return
	}
	if req.model == "" {
		httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "model", `required, e.g. {"model": "purchase_propensity", "features": [{"user": {"id": 612}}]}`)
		return
	}
	set := s.models.Load()
	m := set.byName[req.model]
	if m == nil {
		if why, ok := set.failed[req.model]; ok {
			ctx.Response.Header.Set("Retry-After", "30")
			httpapi.WriteError(ctx, fasthttp.StatusServiceUnavailable, "model "+strconv.Quote(req.model)+" is not loaded: "+why)
			return
		}
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "unknown model "+strconv.Quote(req.model))
		return
	}
	if !req.features {
		httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "features", `required: a list of rows like {"`+m.entity+`": {"id": 612}}`)
		return
	}
	sc.ids = sc.ids[:0]
	for i := range req.rows {
		if string(req.rows[i].entity) != m.entity {
			httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("features[%d]", i), fmt.Sprintf("the model scores %q entities, got %q", m.entity, req.rows[i].entity))
			return
		}
		sc.ids = append(sc.ids, req.rows[i].id)
	}
	s.score(ctx, m, sc)
}

// storedValue turns a stored feature into a model input: numbers as they
// are, booleans as 0/1, anything else (strings, lists, no value yet) as
// missing, which tree models route by their default branch.
func storedValue(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case int64:
		return float64(x)
	case int:
		return float64(x)
	case bool:
		if x {
			return 1
		}
		return 0
	}
	return math.NaN()
}

// score looks the rows up, evaluates the model and writes the answer.
func (s *Server) score(ctx *fasthttp.RequestCtx, m *served, sc *scratch) {
	n := len(sc.ids)
	start := time.Now()
	err := s.lookup(ctx, m.entity, sc)
	getManySeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		s.storeError(ctx, err)
		return
	}
	// The inputs are picked out of the encoded vectors, not decoded into
	// maps; those that read now (days since the last order) are computed
	// as of this request.
	plan := m.plan(s.derive.Load())
	sc.picked = grow(sc.picked, len(plan.names))
	if plan.r != nil {
		sc.fresh = grow(sc.fresh, len(plan.r.Outputs()))
		if sc.env == nil {
			sc.env = map[string]any{}
		}
	}
	nin := len(m.inputs)
	nf := max(m.m.NumFeatures(), nin)
	k := m.m.NumClass()
	sc.x = grow(sc.x, n*nf)
	sc.out = grow(sc.out, n*k)
	sc.uuids = grow(sc.uuids, n*16)
	rand.Read(sc.uuids)
	now := s.now()

	b := sc.buf[:0]
	b = append(b, '[')
	evalStart := time.Now()
	for i := 0; i < n; i++ {
		x := sc.x[i*nf : (i+1)*nf]
		out := sc.out[i*k : (i+1)*k]
		inline := sc.body.kv[sc.body.rows[i].kv[0]:sc.body.rows[i].kv[1]]
		sc.miss = sc.miss[:0]
		found := sc.raw[i] != nil
		if found {
			if err := plan.pick.Pick(sc.raw[i], sc.picked); err != nil {
				s.storeError(ctx, fmt.Errorf("%s %q: %w", m.entity, sc.ids[i], err))
				return
			}
			if plan.r != nil {
				for _, k := range plan.rin {
					if p := sc.picked[k]; p.Kind != featurestore.KindMissing {
						sc.env[plan.names[k]] = p.Any()
					}
				}
				plan.r.Refresh(sc.env, now, sc.fresh)
				clear(sc.env)
			}
		}
	inputs:
		for j, name := range m.inputs {
			for k := range inline {
				if string(inline[k].name) == name {
					x[j] = inline[k].value
					continue inputs
				}
			}
			if found {
				p := sc.picked[j]
				v, ok := p.Num, p.Kind != featurestore.KindMissing
				if plan.r != nil && plan.at[j] >= 0 {
					// A value computed now counts when the vector had the
					// feature or the computation gave one.
					fv := sc.fresh[plan.at[j]]
					v, ok = storedValue(fv), ok || fv != nil
				}
				if ok {
					x[j] = v
					continue
				}
			}
			x[j] = math.NaN()
			sc.miss = append(sc.miss, name)
		}
		for j := nin; j < nf; j++ {
			x[j] = math.NaN()
		}
		uuid := uuidV4(sc.uuids[i*16 : (i+1)*16])
		if i > 0 {
			b = append(b, ',')
		}
		used := len(sc.miss) == 0
		var reason string
		if !used {
			if !found {
				reason = m.entity + " " + strconv.Quote(sc.ids[i]) + " not found in the online store"
			} else {
				reason = "missing features: " + strings.Join(sc.miss, ", ")
			}
			m.unused.Inc()
			b = append(b, `{"model_used":false,"prediction":`...)
			b = append(b, m.defaultJSON...)
			b = append(b, `,"score":null,"uuid":"`...)
			b = append(b, uuid[:]...)
			b = append(b, `","reason":`...)
			b = jsonstr.Append(b, reason)
			b = append(b, '}')
			s.logPrediction(m, sc.ids[i], uuid, x[:nin], math.NaN(), -1, false, now)
			continue
		}
		m.m.Predict(x, out)
		m.used.Inc()
		score, class := m.decide(out)
		b = append(b, `{"model_used":true,"prediction":`...)
		b = m.predictionJSON(b, score, class)
		b = append(b, `,"score":`...)
		b = appendFloat(b, score)
		if k > 1 {
			b = append(b, `,"scores":[`...)
			for c, p := range out {
				if c > 0 {
					b = append(b, ',')
				}
				b = appendFloat(b, p)
			}
			b = append(b, ']')
		}
		b = append(b, `,"uuid":"`...)
		b = append(b, uuid[:]...)
		b = append(b, `"}`...)
		s.logPrediction(m, sc.ids[i], uuid, x[:nin], score, class, true, now)
	}
	m.evalSeconds.Observe(time.Since(evalStart).Seconds())
	b = append(b, ']')
	sc.buf = b
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// decide returns the score to report and the predicted class (-1 when the
// model has no labels and one output).
func (m *served) decide(out []float64) (score float64, class int) {
	if len(out) == 1 {
		if m.binary {
			if out[0] >= m.threshold {
				return out[0], 1
			}
			return out[0], 0
		}
		return out[0], -1
	}
	best := 0
	for c := range out {
		if out[c] > out[best] {
			best = c
		}
	}
	return out[best], best
}

// predictionJSON appends the prediction: the class's label, the class
// index when there are no labels, or the score itself.
func (m *served) predictionJSON(b []byte, score float64, class int) []byte {
	switch {
	case class < 0:
		return appendFloat(b, score)
	case len(m.labelJSON) > class:
		return append(b, m.labelJSON[class]...)
	}
	return strconv.AppendInt(b, int64(class), 10)
}

func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// uuidV4 formats 16 random bytes as a version 4 UUID.
func uuidV4(r []byte) (u [36]byte) {
	r[6] = r[6]&0x0f | 0x40
	r[8] = r[8]&0x3f | 0x80
	uuidtext.Append(u[:0], [16]byte(r))
	return u
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
