package destination

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Headers of every webhook delivery.
const (
	SignatureHeader = "X-Pulse-Signature" // sha256=<hex HMAC of "<timestamp>.<body>">
	TimestampHeader = "X-Pulse-Timestamp" // Unix seconds when the attempt was signed
	DeliveryHeader  = "X-Pulse-Delivery"  // the record's change_id: dedupe on it
	KindHeader      = "X-Pulse-Kind"      // segment or trait
	SegmentHeader   = "X-Pulse-Segment"
	ChangeHeader    = "X-Pulse-Change"  // enter or exit
	TraitHeader     = "X-Pulse-Trait"   // a trait change's trait
	AttemptHeader   = "X-Pulse-Attempt" // 1 for the first try
)

// Sign returns the X-Pulse-Signature value for body sent at ts.
func Sign(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(strconv.AppendInt(nil, ts, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Errors Verify returns.
var (
	ErrNoSignature  = errors.New("webhook: missing signature or timestamp header")
	ErrBadSignature = errors.New("webhook: signature does not match")
	ErrTooOld       = errors.New("webhook: timestamp outside the tolerance (replayed?)")
)

// Verify checks a delivery's headers against its raw body: the signature
// must match and the timestamp be within tolerance of now (5 minutes is
// a good tolerance; 0 skips the check).
func Verify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	sig, tsText := h.Get(SignatureHeader), h.Get(TimestampHeader)
	if sig == "" || tsText == "" {
		return ErrNoSignature
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook: invalid timestamp %q", tsText)
	}
	if !strings.HasPrefix(sig, "sha256=") || !hmac.Equal([]byte(sig), []byte(Sign(secret, ts, body))) {
		return ErrBadSignature
	}
	if tolerance > 0 {
		if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
			return ErrTooOld
		}
	}
	return nil
}
