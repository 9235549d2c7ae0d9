package scorer

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/pulse-rt/pulse/internal/jsonstr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// LogRecord is the JSON value of a record on the predictions topic.
type LogRecord struct {
	UUID    string `json:"uuid"`
	Model   string `json:"model"`
	Version string `json:"version"` // SHA-256 prefix of the model file
	Entity  string `json:"entity"`
	ID      string `json:"id"`
	// Features are the model's inputs as used; null = missing.
	Features map[string]*float64 `json:"features"`
	// Score is null when the model was not used.
	Score      *float64  `json:"score"`
	Prediction any       `json:"prediction"`
	ModelUsed  bool      `json:"model_used"`
	At         time.Time `json:"at"`
}

// logEntry is what the hot path hands the background producer: no
// encoding happens on the request's time.
type logEntry struct {
	m     *served
	id    string
	uuid  [36]byte
	x     []float64 // from predictionLog.xs, returned after encoding
	score float64
	class int
	used  bool
	at    time.Time
}

// predictionLog moves prediction records from requests to Kafka through a
// bounded queue; when the queue or the producer's buffer is full, records
// are shed and counted rather than slow a request down.
type predictionLog struct {
	client *kgo.Client
	topic  string
	queue  chan logEntry
	log    *slog.Logger
	xs     sync.Pool
	// inFlight tracks records handed to the producer, so shutdown can
	// flush them.
	inFlight sync.WaitGroup

	warnMu   sync.Mutex
	lastWarn time.Time
	unwarned int
}

// warn logs a produce failure at most every 10 seconds, with the count of
// failures since, so a Kafka outage does not flood the log.
func (p *predictionLog) warn(err error) {
	p.warnMu.Lock()
	defer p.warnMu.Unlock()
	p.unwarned++
	if time.Since(p.lastWarn) < 10*time.Second {
		return
	}
	p.log.Warn("prediction log records not produced", "count", p.unwarned, "err", err)
	p.lastWarn, p.unwarned = time.Now(), 0
}

func newPredictionLog(client *kgo.Client, topic string, size int, log *slog.Logger) *predictionLog {
	return &predictionLog{client: client, topic: topic, queue: make(chan logEntry, max(size, 1)), log: log}
}

// add queues one record, or sheds it when the queue is full. It never blocks.
func (s *Server) logPrediction(m *served, id string, uuid [36]byte, x []float64, score float64, class int, used bool, at time.Time) {
	p := s.plog
	if p == nil {
		return
	}
	var xs []float64
	if v, ok := p.xs.Get().(*[]float64); ok {
		xs = (*v)[:0]
	}
	xs = append(xs, x...)
	select {
	case p.queue <- logEntry{m: m, id: id, uuid: uuid, x: xs, score: score, class: class, used: used, at: at}:
	default:
		logShed.Inc()
	}
}

// run produces queued records until ctx ends, then drains the queue and
// waits (a bounded time) for the producer's acknowledgements.
func (p *predictionLog) run(ctx context.Context) {
	var buf []byte
	produce := func(e logEntry) {
		buf = e.encode(buf[:0])
		val := make([]byte, len(buf))
		copy(val, buf)
		xs := e.x
		p.xs.Put(&xs)
		rec := &kgo.Record{Topic: p.topic, Key: []byte(e.id), Value: val}
		p.inFlight.Add(1)
		p.client.TryProduce(context.Background(), rec, func(_ *kgo.Record, err error) {
			defer p.inFlight.Done()
			switch {
			case err == kgo.ErrMaxBuffered:
				logShed.Inc()
			case err != nil:
				logErrors.Inc()
				p.warn(err)
			default:
				logProduced.Inc()
			}
		})
	}
	for {
		select {
		case e := <-p.queue:
			produce(e)
		case <-ctx.Done():
			for {
				select {
				case e := <-p.queue:
					produce(e)
					continue
				default:
				}
				break
			}
			done := make(chan struct{})
			go func() { p.inFlight.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				p.log.Warn("prediction log: some records were not acknowledged before shutdown")
			}
			return
		}
	}
}

// encode appends the record's JSON to b by hand: this runs once per
// prediction, off the request path but on the same two cores.
func (e *logEntry) encode(b []byte) []byte {
	m := e.m
	b = append(b, `{"uuid":"`...)
	b = append(b, e.uuid[:]...)
	b = append(b, `","model":`...)
	b = jsonstr.Append(b, m.name)
	b = append(b, `,"version":"`...)
	b = append(b, m.version...)
	b = append(b, `","entity":`...)
	b = jsonstr.Append(b, m.entity)
	b = append(b, `,"id":`...)
	b = jsonstr.Append(b, e.id)
	b = append(b, `,"features":{`...)
	for j, name := range m.inputs {
		if j > 0 {
			b = append(b, ',')
		}
		b = jsonstr.Append(b, name)
		b = append(b, ':')
		b = appendFloat(b, e.x[j])
	}
	b = append(b, `},"score":`...)
	b = appendFloat(b, e.score)
	b = append(b, `,"prediction":`...)
	if e.used {
		b = m.predictionJSON(b, e.score, e.class)
	} else {
		b = append(b, m.defaultJSON...)
	}
	b = append(b, `,"model_used":`...)
	b = strconv.AppendBool(b, e.used)
	b = append(b, `,"at":"`...)
	b = e.at.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `"}`...)
	return b
}
