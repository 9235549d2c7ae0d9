package loadtest

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
)

// FillStore writes users "0".."n-1" with the vectors the stream would
// compute for them (synthUser): what `pulse loadtest predict -embedded`
// serves predictions from.
func FillStore(ctx context.Context, cfg *config.Config, store featurestore.Store, n int) error {
	set, err := aggregate.Compile(cfg.Features, aggregate.Options{})
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(1, 2))
	batch := make([]featurestore.Update, 0, 1000)
	now := time.Now()
	for i := 0; i < n; i++ {
		v, err := synthUser(set, strconv.Itoa(i), now, r)
		if err != nil {
			return err
		}
		batch = append(batch, featurestore.Update{Vector: v})
		if len(batch) == cap(batch) || i == n-1 {
			if err := store.Write(ctx, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

// synthUser is the vector the stream would compute at now for user id
// after a synthetic history drawn from r (views, cart adds, sessions,
// orders over the last 40 days), through the config's aggregate set, so
// every feature is there, as in production.
func synthUser(set *aggregate.Set, id string, now time.Time, r *rand.Rand) (featurestore.Vector, error) {
	st := set.NewState()
	var ev event.Event
	apply := func(name string, typ event.Type, ago time.Duration, props map[string]any) error {
		ev = event.Event{Type: typ, Event: name, UserID: id, MessageID: id + "/" + strconv.Itoa(r.IntN(1<<30)),
			Timestamp: now.Add(-ago), Properties: props}
		_, err := set.Apply(st, &ev)
		return err
	}
	ev = event.Event{Type: event.Identify, UserID: id, MessageID: id + "/identify",
		Timestamp: now.Add(-40 * 24 * time.Hour), Traits: map[string]any{"country": "FR"}}
	if _, err := set.Apply(st, &ev); err != nil {
		return featurestore.Vector{}, err
	}
	for range r.IntN(20) {
		ago := time.Duration(r.Int64N(int64(7 * 24 * time.Hour)))
		if err := apply("Session Started", event.Track, ago, nil); err != nil {
			return featurestore.Vector{}, err
		}
		for range r.IntN(6) {
			props := map[string]any{"product_id": "p-" + strconv.Itoa(r.IntN(500)), "category": "c-" + strconv.Itoa(r.IntN(20))}
			if err := apply("Product Viewed", event.Track, ago, props); err != nil {
				return featurestore.Vector{}, err
			}
		}
		if r.IntN(4) == 0 {
			if err := apply("Product Added", event.Track, ago, nil); err != nil {
				return featurestore.Vector{}, err
			}
		}
	}
	for range r.IntN(5) {
		ago := time.Duration(r.Int64N(int64(40 * 24 * time.Hour)))
		if err := apply("Order Completed", event.Track, ago, map[string]any{"revenue": 20 + 180*r.Float64()}); err != nil {
			return featurestore.Vector{}, err
		}
	}
	names := set.Names()
	vals := set.Values(st, now, nil)
	feats := make(map[string]any, len(names))
	for k, name := range names {
		feats[name] = vals[k]
	}
	return featurestore.Vector{Entity: "user", ID: id, UpdatedAt: now, Features: feats}, nil
}

// RewriteUsers rewrites rate random users' vectors per second into store
// until ctx ends, in a batch every 10 ms as the stream writes a poll's
// changes, counting them in *done.
func RewriteUsers(ctx context.Context, cfg *config.Config, store featurestore.Store, users int, rate float64, done *atomic.Int64) error {
	w, err := newRewriter(cfg, store, users, rate, time.Now())
	if err != nil {
		return err
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			n, err := w.rewrite(ctx, now)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			done.Add(int64(n))
		}
	}
}

// rewriter is RewriteUsers' state, apart from its clock: rewrite is called
// with the ticker's times, or a test's.
type rewriter struct {
	set     *aggregate.Set
	store   featurestore.Store
	users   int
	rate    float64
	r       *rand.Rand
	start   time.Time
	written int // vectors due so far, all written
	batch   []featurestore.Update
}

func newRewriter(cfg *config.Config, store featurestore.Store, users int, rate float64, start time.Time) (*rewriter, error) {
	set, err := aggregate.Compile(cfg.Features, aggregate.Options{})
	if err != nil {
		return nil, err
	}
	return &rewriter{set: set, store: store, users: users, rate: rate, r: rand.New(rand.NewPCG(3, 4)), start: start}, nil
}

// rewrite writes, in one batch, the vectors due between the last call and
// now at the rate, with now as their time, and says how many it wrote.
func (w *rewriter) rewrite(ctx context.Context, now time.Time) (int, error) {
	w.batch = w.batch[:0]
	for due := int(w.rate * now.Sub(w.start).Seconds()); w.written < due; w.written++ {
		v, err := synthUser(w.set, strconv.Itoa(w.r.IntN(w.users)), now, w.r)
		if err != nil {
			return 0, err
		}
		w.batch = append(w.batch, featurestore.Update{Vector: v})
	}
	if len(w.batch) == 0 {
		return 0, nil
	}
	if err := w.store.Write(ctx, w.batch); err != nil {
		return 0, err
	}
	return len(w.batch), nil
}
