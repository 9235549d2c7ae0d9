package destination

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/pulse-rt/pulse/model"
	"github.com/pulse-rt/pulse/segment"
)

// Sink delivers changes to one outside system. It is small: the runner
// does the consuming, ordering, retrying, rate limiting, dead-lettering
// and counting, the same for every sink.
type Sink interface {
	// Deliver sends batch (at most the route's BatchSize changes, no two
	// of one entity) and returns the ones that failed; nil means every
	// change was delivered. ctx carries the attempt's timeout. Deliver may
	// be called from several goroutines at once (Concurrency).
	Deliver(ctx context.Context, batch []Change) []Failure
}

// Kinds of change (Change.Kind, and the kind label of the metrics).
const (
	KindSegment = "segment" // a segment enter or exit (segment.Record, the segments topic)
	KindTrait   = "trait"   // a predictive trait's score change (model.TraitScore, the traits topic)
)

// Change is one change handed to a sink: a segment's enter or exit, or a
// trait's score change.
type Change struct {
	// Record is the segment change, decoded, features included. For a
	// trait change it holds the common fields only: ID (the change_id),
	// Entity, EntityID and At.
	segment.Record
	// Kind is KindSegment or KindTrait.
	Kind string
	// Trait is the trait change (KindTrait), nil for a segment change.
	Trait *model.TraitScore
	Raw   []byte // the record's value as on the topic
	// Attempt is 1 for the first try of this change, 2 for the first retry.
	Attempt int
}

// SegmentChange is the Change of segment record r, read as raw.
func SegmentChange(r segment.Record, raw []byte) Change {
	return Change{Record: r, Kind: KindSegment, Raw: raw}
}

// TraitChange is the Change of trait record ts, read as raw.
func TraitChange(ts *model.TraitScore, raw []byte) Change {
	return Change{
		Record: segment.Record{ID: ts.ChangeID, Entity: ts.Entity, EntityID: ts.ID, At: ts.At},
		Kind:   KindTrait, Trait: ts, Raw: raw,
	}
}

// TraitFilter decides which of a trait's score changes a destination
// delivers (config: decimals, thresholds). It reads the change alone
// (its score and the previous one), so it keeps no state across records.
type TraitFilter struct {
	// Decimals: deliver only when the score rounded to Decimals changes.
	Decimals int
	// Thresholds, when set: deliver only when the rounded score crosses
	// one (the previous and the new one on different sides; a score >= t
	// is above t, no score is below every threshold).
	Thresholds []float64
}

// Round is v rounded to the filter's decimals (nil stays nil).
func (f TraitFilter) Round(v *float64) *float64 {
	if v == nil {
		return nil
	}
	p := math.Pow10(f.Decimals)
	r := math.Round(*v*p) / p
	if r == 0 {
		r = 0 // not -0
	}
	return &r
}

// Passes reports whether a change from previous to score is delivered.
func (f TraitFilter) Passes(previous, score *float64) bool {
	prev, now := f.Round(previous), f.Round(score)
	if len(f.Thresholds) > 0 {
		for _, t := range f.Thresholds {
			if (prev != nil && *prev >= t) != (now != nil && *now >= t) {
				return true
			}
		}
		return false
	}
	if prev == nil || now == nil {
		return (prev == nil) != (now == nil)
	}
	return *prev != *now
}

// Key is the change's idempotency key: its change_id (a segment's or a
// trait's), the same on every attempt and on every replay after a crash.
// Receivers dedupe on it.
func (c *Change) Key() string { return c.ID }

// Failure is one change of a batch that was not delivered.
type Failure struct {
	Index     int   // into the batch
	Err       error // why
	Retryable bool  // whether another try may succeed
	// RetryAfter is the receiver's wish (a Retry-After header); the
	// runner waits at least this long, up to its MaxBackoff.
	RetryAfter time.Duration
	Status     int // the HTTP status, 0 when none
}

// failAll is one failure for every change of a batch of n.
func failAll(n int, f Failure) []Failure {
	out := make([]Failure, n)
	for i := range out {
		out[i] = f
		out[i].Index = i
	}
	return out
}

// StatusError is a receiver's non-2xx answer.
type StatusError struct {
	Status int
	Body   string // the start of the answer, for the dead letter
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("receiver answered %d %s", e.Status, http.StatusText(e.Status))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// NewHTTPClient is the client the HTTP sinks use by default: it follows no
// redirect (a 3xx answer counts as a failure, so a moved endpoint is
// noticed), and each attempt's timeout comes from its context.
func NewHTTPClient() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// send makes one request and classifies the answer: a network error, a
// timeout, 408, 429 and 5xx may be retried (with the Retry-After of the
// answer); other non-2xx answers are final. body is the answer's start
// (64 KiB at most), for sinks that read it.
func send(client *http.Client, req *http.Request) (body []byte, f *Failure) {
	resp, err := client.Do(req)
	if err != nil {
		return nil, &Failure{Err: err, Retryable: true}
	}
	defer resp.Body.Close()
	body, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // lets the connection be reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return body, nil
	}
	snippet := string(body)
	if len(snippet) > 200 {
		snippet = snippet[:200]
	}
	f = &Failure{Err: &StatusError{Status: resp.StatusCode, Body: snippet}, Status: resp.StatusCode}
	f.Retryable = resp.StatusCode == 408 || resp.StatusCode == 429 || resp.StatusCode >= 500
	f.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	return body, f
}

// retryAfter reads a Retry-After value: seconds, or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
