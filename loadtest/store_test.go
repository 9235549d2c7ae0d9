package loadtest

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/examples"
	"github.com/pulse-rt/pulse/featurestore"
)

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

func openPebble(t *testing.T) *featurestore.Pebble {
	t.Helper()
	st, err := featurestore.OpenPebble(t.TempDir(), featurestore.PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestRewriteUsers: -rewrites writes the rate asked for, fresh vectors of
// users within range, as the stream would. The rewriter's clock is the
// test's: half a second of 10 ms ticks at 2000/s is 1000 vectors, however
// busy the machine (it once asserted a rate on the wall clock, and failed
// on a loaded one: "rewrote 179 vectors in 0.5 s at 2000/s").
func TestRewriteUsers(t *testing.T) {
	cfg, st := exampleConfig(t), openPebble(t)
	const users, rate = 50, 2000.0
	start := time.Now()
	w, err := newRewriter(cfg, st, users, rate, start)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	written := 0
	for tick := 1; tick <= 50; tick++ {
		n, err := w.rewrite(ctx, start.Add(time.Duration(tick)*10*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		written += n
	}
	if written != rate/2 {
		t.Fatalf("rewrote %d vectors in 0.5 s at %g/s", written, rate)
	}
	fresh := 0
	for i := range users {
		v, err := st.Get(ctx, "user", strconv.Itoa(i))
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
	if _, err := st.Get(ctx, "user", strconv.Itoa(users)); !errors.Is(err, featurestore.ErrNotFound) {
		t.Fatalf("user %d, out of range: %v", users, err)
	}
}

// countingStore counts the vectors written through it.
type countingStore struct {
	featurestore.Store
	n atomic.Int64
}

func (c *countingStore) Write(ctx context.Context, batch []featurestore.Update) error {
	if err := c.Store.Write(ctx, batch); err != nil {
		return err
	}
	c.n.Add(int64(len(batch)))
	return nil
}

// TestRewriteUsersCountsWhatItWrites: on its own ticker, RewriteUsers
// writes until cancelled and reports exactly the vectors it wrote (the
// figure `loadtest predict -rewrites` prints).
func TestRewriteUsersCountsWhatItWrites(t *testing.T) {
	cfg, st := exampleConfig(t), &countingStore{Store: openPebble(t)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var done atomic.Int64
	errc := make(chan error, 1)
	go func() { errc <- RewriteUsers(ctx, cfg, st, 50, 2000, &done) }()
	deadline := time.Now().Add(time.Minute)
	for st.n.Load() < 100 {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("RewriteUsers wrote %d vectors in a minute (err %v)", st.n.Load(), <-errc)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if done.Load() != st.n.Load() {
		t.Fatalf("RewriteUsers reported %d vectors, wrote %d", done.Load(), st.n.Load())
	}
}
