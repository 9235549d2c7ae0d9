package ingest_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/event"
	analytics "gopkg.in/segmentio/analytics-go.v3"
)

// The real Amplitude, PostHog and Segment client packages, unchanged and
// pointed at Pulse (scripts/install-test-deps.sh installs them): every
// event arrives once, with its ids, name, properties and time.

const sdkEvents = 30

// sdkBase is the events' first time: an hour ago, on the millisecond, so
// that each event's own time is told from its receive time.
func sdkBase() time.Time { return time.Now().Add(-time.Hour).Truncate(time.Millisecond).UTC() }

func compatDir(t *testing.T) string {
	dir, _ := filepath.Abs("testdata/compat")
	return dir
}

// runNode runs a script of testdata/compat with node, failing loudly when
// the package it drives is not installed.
func runNode(t *testing.T, pkg string, args ...string) {
	t.Helper()
	dir := compatDir(t)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
		t.Fatalf("%s is not installed: run `make test-deps` (%v)", pkg, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: %v", err)
	}
	run(t, dir, node, args...)
}

// runPython runs send.py with the SDK venv's Python.
func runPython(t *testing.T, args ...string) {
	t.Helper()
	cache := os.Getenv("PULSE_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "pulse")
	}
	py := filepath.Join(cache, "venv-sdk", "bin", "python")
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("the Python SDKs are not installed (%s): run `make test-deps` (%v)", py, err)
	}
	run(t, compatDir(t), py, append([]string{"send.py"}, args...)...)
}

func run(t *testing.T, dir, bin string, args ...string) {
	t.Helper()
	// A client that hangs fails the test rather than stall it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(bin), args, err, out)
	}
}

func ms(t time.Time) string { return fmt.Sprint(t.UnixMilli()) }

// checkAmplitude checks what amplitude.mjs and send.py amplitude send.
func checkAmplitude(t *testing.T, events map[string]*event.Event, prefix, idPrefix string, base time.Time) {
	t.Helper()
	for i := range sdkEvents {
		id := fmt.Sprintf("%s%d", prefix, i)
		e := events[id]
		if e == nil {
			t.Fatalf("insert_id %s never arrived", id)
		}
		if want := base.Add(time.Duration(i) * time.Minute); !e.Timestamp.Equal(want) {
			t.Fatalf("%s: timestamp %s, want %s", id, e.Timestamp, want)
		}
		if want := fmt.Sprintf("%samp-device-%d", idPrefix, i); e.AnonymousID != want {
			t.Fatalf("%s: anonymousId %q, want %q", id, e.AnonymousID, want)
		}
		wantUser := fmt.Sprintf("%samp-user-%d", idPrefix, i%5)
		if i%3 == 1 {
			wantUser = ""
		}
		if e.UserID != wantUser {
			t.Fatalf("%s: userId %q, want %q", id, e.UserID, wantUser)
		}
		if i%3 == 2 {
			if e.Type != event.Identify || e.Traits["plan"] != "pro" || e.Traits["first_seen"] != "2026-01-01" {
				t.Fatalf("%s: want an identify with traits plan and first_seen: %+v", id, e)
			}
			continue
		}
		if e.Type != event.Track || e.Event != "Order Completed" || e.Properties["revenue"] != float64(i) || e.Properties["order_id"] != fmt.Sprintf("o-%d", i) {
			t.Fatalf("%s: want the track Order Completed with revenue %d: %+v", id, i, e)
		}
		if lib, _ := e.Context["library"].(map[string]any); lib["name"] == nil || lib["name"] == "" {
			t.Fatalf("%s: context.library = %v", id, e.Context["library"])
		}
	}
}

func TestAmplitudeNode(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	base := sdkBase()
	runNode(t, "@amplitude/analytics-node", "amplitude.mjs", h.url+"/2/httpapi", "wk", fmt.Sprint(sdkEvents), ms(base))
	checkAmplitude(t, decodeEvents(t, consume(t, brokers, "pulse.events", sdkEvents)), "amp-node-", "", base)
}

func TestAmplitudePython(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	base := sdkBase()
	runPython(t, "amplitude", h.url+"/2/httpapi", "wk", fmt.Sprint(sdkEvents), ms(base))
	checkAmplitude(t, decodeEvents(t, consume(t, brokers, "pulse.events", sdkEvents)), "py-amp-", "py-", base)
}

// postHogSkew bounds PostHog's clock correction: the client's timestamp is
// moved by how far its sent_at is from the receive time, the request's
// time in flight here.
const postHogSkew = 30 * time.Second

// checkPostHog checks what posthog.mjs and send.py posthog send.
func checkPostHog(t *testing.T, events map[string]*event.Event, idPrefix string, base time.Time, identifyUUIDs bool) {
	t.Helper()
	byUser := map[string]*event.Event{}
	for _, e := range events {
		byUser[e.UserID+"/"+e.MessageID] = e
		if e.Type == event.Identify {
			byUser[e.UserID] = e
		}
	}
	for i := range sdkEvents {
		uuid := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		if i%3 == 2 {
			user := fmt.Sprintf("%sph-id-%d", idPrefix, i)
			e := byUser[user]
			if e == nil {
				t.Fatalf("the identify of %s never arrived", user)
			}
			if e.AnonymousID != fmt.Sprintf("%sph-anon-%d", idPrefix, i) || e.Traits["plan"] != "pro" {
				t.Fatalf("identify %s: want anonymousId %sph-anon-%d and traits.plan: %+v", user, idPrefix, i, e)
			}
			if identifyUUIDs && e.MessageID != uuid {
				t.Fatalf("identify %s: messageId %q, want %q", user, e.MessageID, uuid)
			}
			continue
		}
		e := events[uuid]
		if e == nil {
			t.Fatalf("uuid %s never arrived", uuid)
		}
		if e.Type != event.Track || e.Event != "Order Completed" || e.UserID != fmt.Sprintf("%sph-user-%d", idPrefix, i%5) ||
			e.Properties["revenue"] != float64(i) || e.Properties["order_id"] != fmt.Sprintf("o-%d", i) {
			t.Fatalf("%s: want the track Order Completed of %sph-user-%d with revenue %d: %+v", uuid, idPrefix, i%5, i, e)
		}
		want := base.Add(time.Duration(i) * time.Minute)
		if d := e.Timestamp.Sub(want); math.Abs(float64(d)) > float64(postHogSkew) {
			t.Fatalf("%s: timestamp %s, want %s (within %s)", uuid, e.Timestamp, want, postHogSkew)
		}
		if lib, _ := e.Context["library"].(map[string]any); lib["name"] == nil || lib["name"] == "" {
			t.Fatalf("%s: context.library = %v", uuid, e.Context["library"])
		}
	}
}

func TestPostHogNode(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	base := sdkBase()
	runNode(t, "posthog-node", "posthog.mjs", h.url, "wk", fmt.Sprint(sdkEvents), ms(base))
	checkPostHog(t, decodeEvents(t, consume(t, brokers, "pulse.events", sdkEvents)), "", base, false)
}

func TestPostHogPython(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	base := sdkBase()
	runPython(t, "posthog", h.url, "wk", fmt.Sprint(sdkEvents), ms(base))
	checkPostHog(t, decodeEvents(t, consume(t, brokers, "pulse.events", sdkEvents)), "py-", base, true)
}

// checkSegment checks the Segment events send.py segment and
// TestSegmentGo send: i even a track, odd an identify.
func checkSegment(t *testing.T, events map[string]*event.Event, prefix string, base time.Time) {
	t.Helper()
	for i := range sdkEvents {
		id := fmt.Sprintf("%sseg-%d", prefix, i)
		e := events[id]
		if e == nil {
			t.Fatalf("message %s never arrived", id)
		}
		if want := base.Add(time.Duration(i) * time.Minute); !e.Timestamp.Equal(want) {
			t.Fatalf("%s: timestamp %s, want %s", id, e.Timestamp, want)
		}
		if want := fmt.Sprintf("%sseg-user-%d", prefix, i%5); e.UserID != want {
			t.Fatalf("%s: userId %q, want %q", id, e.UserID, want)
		}
		if i%2 == 1 {
			if e.Type != event.Identify || e.Traits["plan"] != "pro" {
				t.Fatalf("%s: want an identify with traits.plan: %+v", id, e)
			}
			continue
		}
		if e.Type != event.Track || e.Event != "Order Completed" || e.Properties["revenue"] != float64(i) {
			t.Fatalf("%s: want the track Order Completed with revenue %d: %+v", id, i, e)
		}
	}
}

func TestSegmentPython(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	base := sdkBase()
	runPython(t, "segment", h.url, "wk", fmt.Sprint(sdkEvents), ms(base))
	checkSegment(t, decodeEvents(t, consume(t, brokers, "pulse.events", sdkEvents)), "py-", base)
}

// TestSegmentGo drives gopkg.in/segmentio/analytics-go.v3 in process.
func TestSegmentGo(t *testing.T) {
	brokers := embedded(t)
	h := newHarness(t, brokers, "")
	base := sdkBase()
	var (
		mu     sync.Mutex
		failed []error
	)
	cb := callback{failure: func(m analytics.Message, err error) { mu.Lock(); failed = append(failed, err); mu.Unlock() }}
	client, err := analytics.NewWithConfig("wk", analytics.Config{Endpoint: h.url, BatchSize: 1000, Interval: time.Hour, Callback: cb})
	if err != nil {
		t.Fatal(err)
	}
	for i := range sdkEvents {
		user, id, at := fmt.Sprintf("go-seg-user-%d", i%5), fmt.Sprintf("go-seg-%d", i), base.Add(time.Duration(i)*time.Minute)
		var m analytics.Message = analytics.Track{MessageId: id, UserId: user, Event: "Order Completed", Timestamp: at,
			Properties: analytics.NewProperties().Set("revenue", i)}
		if i%2 == 1 {
			m = analytics.Identify{MessageId: id, UserId: user, Timestamp: at, Traits: analytics.NewTraits().Set("plan", "pro")}
		}
		if err := client.Enqueue(m); err != nil {
			t.Fatal(err)
		}
	}
	// Close flushes what is queued and waits for the answers.
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failed) > 0 {
		t.Fatalf("analytics-go: %v", failed)
	}
	checkSegment(t, decodeEvents(t, consume(t, brokers, "pulse.events", sdkEvents)), "go-", base)
}

type callback struct {
	failure func(analytics.Message, error)
}

func (c callback) Success(analytics.Message)              {}
func (c callback) Failure(m analytics.Message, err error) { c.failure(m, err) }
