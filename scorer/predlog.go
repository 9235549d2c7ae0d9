package scorer

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/pulse-rt/pulse/model"
	"github.com/twmb/franz-go/pkg/kgo"
)

// LogRecord is the value of a record on the predictions topic: the topic's
// one record type, model.PredictionRecord, under the name this package has
// always given it.
type LogRecord = model.PredictionRecord

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
	var buf, pred []byte
	produce := func(e logEntry) {
		buf, pred = e.encode(buf[:0], pred)
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

// encode appends the record's value to b (model.AppendPrediction, which
// builds no map): this runs once per prediction, off the request path but
// on the same two cores. pred is scratch space for the prediction's JSON.
func (e *logEntry) encode(b, pred []byte) (value, scratch []byte) {
	m := e.m
	r := model.PredictionRecord{UUID: string(e.uuid[:]), Model: m.name, Version: m.version, Entity: m.entity, ID: e.id,
		ModelUsed: e.used, At: e.at}
	if e.used {
		r.Score = &e.score
		pred = m.predictionJSON(pred[:0], e.score, e.class)
	} else {
		pred = append(pred[:0], m.defaultJSON...)
	}
	return model.AppendPrediction(b, &r, m.inputs, e.x, pred), pred
}
