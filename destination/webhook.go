package destination

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Webhook POSTs each change's record, as on the topic (a segment.Record,
// or a trait change's model.TraitScore), signed (Sign) with the secret;
// X-Pulse-Delivery carries the idempotency key, X-Pulse-Kind the kind
// (segment or trait), and X-Pulse-Segment and X-Pulse-Change, or
// X-Pulse-Trait, what changed. One change per request.
type Webhook struct {
	URL     string
	Secret  string
	Headers map[string]string // added to each request
	Client  *http.Client      // default NewHTTPClient()
}

// Deliver implements Sink.
func (w *Webhook) Deliver(ctx context.Context, batch []Change) []Failure {
	var fails []Failure
	for i := range batch {
		if f := w.post(ctx, &batch[i]); f != nil {
			f.Index = i
			fails = append(fails, *f)
		}
	}
	return fails
}

func (w *Webhook) post(ctx context.Context, c *Change) *Failure {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(c.Raw))
	if err != nil {
		return &Failure{Err: fmt.Errorf("cannot build request: %w", err)}
	}
	for k, v := range w.Headers {
		req.Header.Set(k, v)
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pulse-webhooks/1")
	req.Header.Set(TimestampHeader, strconv.FormatInt(ts, 10))
	req.Header.Set(SignatureHeader, Sign(w.Secret, ts, c.Raw))
	req.Header.Set(DeliveryHeader, c.Key())
	if c.Trait != nil {
		req.Header.Set(KindHeader, KindTrait)
		req.Header.Set(TraitHeader, c.Trait.Trait)
	} else {
		req.Header.Set(KindHeader, KindSegment)
		req.Header.Set(SegmentHeader, c.Segment)
		req.Header.Set(ChangeHeader, c.Change)
	}
	req.Header.Set(AttemptHeader, strconv.Itoa(c.Attempt))
	_, f := send(w.client(), req)
	return f
}

func (w *Webhook) client() *http.Client {
	if w.Client == nil {
		return defaultClient
	}
	return w.Client
}

var defaultClient = NewHTTPClient()
