package scorer

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/deletion"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// Deletions is the scorer's copy of the deletions topic (pulse.deletions:
// deletion.Record, each stage's share of each deletion on request, done):
// every deletion's progress, for GET /v1/deletions. Like Identities it
// reads every partition from the start, read_committed, with no consumer
// group; it holds a few hundred bytes per deletion.
//
// Deletions is safe for concurrent use: Run writes, lookups read.
type Deletions struct {
	cfg *config.Config
	log *slog.Logger

	mu  sync.Mutex
	tab *deletion.Table
}

var (
	deletionsUnfinished = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "pulse_scorer_deletions_unfinished",
		Help: "Deletions on request not yet done in every stage (pending or in progress; ClickHouse's running mutations not counted), as the scorer read them from the deletions topic.",
	})
	deletionOldestUnfinished = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "pulse_scorer_deletion_oldest_unfinished_seconds",
		Help: "Age of the oldest deletion on request not yet done (0: none): a deletion stuck in a stage.",
	})
)

// NewDeletions reads cfg.Kafka.Topics.Deletions once Run starts.
func NewDeletions(cfg *config.Config, log *slog.Logger) *Deletions {
	if log == nil {
		log = slog.Default()
	}
	return &Deletions{cfg: cfg, log: log.With("component", "deletions"), tab: deletion.NewTable()}
}

// deletionsGaugeEvery is how often Run sets the gauges (an unfinished
// deletion ages with no record read).
const deletionsGaugeEvery = 5 * time.Second

// Run reads the deletions topic until ctx ends, and keeps the gauges.
func (d *Deletions) Run(ctx context.Context) error {
	go func() {
		t := time.NewTicker(deletionsGaugeEvery)
		defer t.Stop()
		for {
			d.setGauges(time.Now())
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return kafka.Follow(ctx, d.cfg.Kafka, d.cfg.Kafka.Topics.Deletions, d.log, func(fs kgo.Fetches) {
		fs.EachRecord(d.add)
	})
}

func (d *Deletions) add(r *kgo.Record) {
	if r.Value == nil {
		return // a tombstone (an operator pruning the audit): gone from the next start's read
	}
	rec, err := deletion.Decode(r.Value)
	if err != nil {
		d.log.Warn("skipping an unreadable deletion record", "partition", r.Partition, "offset", r.Offset, "err", err)
		return
	}
	d.mu.Lock()
	d.tab.Add(rec)
	d.mu.Unlock()
}

func (d *Deletions) withHistory() bool { return d.cfg.ClickHouse.Addr != "" }

// Status is request id's progress.
func (d *Deletions) Status(id string) (deletion.Status, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tab.Status(id, d.withHistory())
}

// List is every deletion's progress, the latest first.
func (d *Deletions) List() []deletion.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tab.List(d.withHistory())
}

func (d *Deletions) setGauges(now time.Time) {
	d.mu.Lock()
	n, oldest := d.tab.Unfinished(d.withHistory())
	d.mu.Unlock()
	deletionsUnfinished.Set(float64(n))
	if oldest.IsZero() {
		deletionOldestUnfinished.Set(0)
	} else {
		deletionOldestUnfinished.Set(now.Sub(oldest).Seconds())
	}
}

// WithDeletionStatus serves GET /v1/deletions and /v1/deletions/{request_id}
// from d (the caller runs it). Without it the paths answer 503.
func WithDeletionStatus(d *Deletions) Option {
	return func(s *Server) { s.deletions = d }
}

// MutationReader is what the history reader adds for the deletion status:
// the creation time of the oldest ClickHouse mutation not done (zero:
// none), which keeps a deletion's history stage in progress.
type MutationReader interface {
	OldestRunningMutation(ctx context.Context) (time.Time, error)
}

// DeletionList is the answer of GET /v1/deletions.
type DeletionList struct {
	Deletions []deletion.Status `json:"deletions"`
	// Total counts the deletions of the status asked for (all without
	// ?status=), of which Deletions holds the latest ?limit=.
	Total int `json:"total"`
}

// listLimit reads ?limit= of the privacy lists (GET /v1/deletions,
// /v1/suppressions): 1 to 1000, 100 by default; ok is false once it has
// answered 400 naming limit.
func listLimit(ctx *fasthttp.RequestCtx) (limit int, ok bool) {
	const max = 1000
	q := string(ctx.QueryArgs().Peek("limit"))
	if q == "" {
		return 100, true
	}
	n, err := strconv.Atoi(q)
	if err != nil || n < 1 || n > max {
		httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "limit", "want a number from 1 to "+strconv.Itoa(max)+", got "+strconv.Quote(q))
		return 0, false
	}
	return n, true
}

// deletionStatus answers GET /v1/deletions (rest "") and
// /v1/deletions/{request_id}.
func (s *Server) deletionStatus(ctx *fasthttp.RequestCtx, rest string) {
	if !s.authorize(ctx, config.ScopeAdmin, "") {
		return
	}
	if s.deletions == nil {
		httpapi.WriteError(ctx, fasthttp.StatusServiceUnavailable, "deletions are not followed by this scorer (identity.enabled is false, or it serves no profiles)")
		return
	}
	if rest != "" {
		st, ok := s.deletions.Status(rest)
		if !ok {
			httpapi.WriteFieldError(ctx, fasthttp.StatusNotFound, "request_id", "no deletion "+strconv.Quote(rest)+" (the id DELETE /v1/profiles or pulse delete answered)")
			return
		}
		s.settleMutations(&st)
		writeJSONStatus(ctx, fasthttp.StatusOK, st)
		return
	}
	limit, ok := listLimit(ctx)
	if !ok {
		return
	}
	want := string(ctx.QueryArgs().Peek("status"))
	switch want {
	case "", deletion.StatePending, deletion.StateInProgress, deletion.StateDone:
	default:
		httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "status", "want "+strings.Join([]string{deletion.StatePending, deletion.StateInProgress, deletion.StateDone}, ", ")+", got "+strconv.Quote(want))
		return
	}
	all := s.deletions.List()
	var oldest time.Time
	var asked, known bool // one question to ClickHouse for the whole list
	out := DeletionList{Deletions: []deletion.Status{}}
	for i := range all {
		st := &all[i]
		if st.History != nil && st.History.Done {
			if !asked {
				oldest, known = s.oldestMutation()
				asked = true
			}
			if known {
				st.SettleMutations(oldest)
			}
		}
		if want != "" && st.State != want {
			continue
		}
		out.Total++
		if len(out.Deletions) < limit {
			out.Deletions = append(out.Deletions, *st)
		}
	}
	writeJSONStatus(ctx, fasthttp.StatusOK, out)
}

// settleMutations marks st's history stage in progress while ClickHouse
// runs mutations issued before it finished.
func (s *Server) settleMutations(st *deletion.Status) {
	if st.History == nil || !st.History.Done {
		return
	}
	if oldest, ok := s.oldestMutation(); ok {
		st.SettleMutations(oldest)
	}
}

// oldestMutation asks the history for its oldest running mutation; ok is
// false when the scorer reads no history, or it did not answer (the
// stage's parts then say done alone).
func (s *Server) oldestMutation() (time.Time, bool) {
	m, ok := s.events.(MutationReader)
	if !ok {
		return time.Time{}, false
	}
	// Not a child of the request's ctx: a context.WithTimeout of a
	// *fasthttp.RequestCtx keeps watching it after the handler returns.
	qctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	oldest, err := m.OldestRunningMutation(qctx)
	if errors.Is(err, ErrNoHistory) {
		return time.Time{}, false // no history (yet): nothing to say
	}
	if err != nil {
		s.log.Warn("cannot read ClickHouse's running mutations for a deletion's status", "err", err)
		return time.Time{}, false
	}
	return oldest, true
}
