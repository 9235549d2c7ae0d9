package webhook

import (
	"net/http"
	"time"

	"github.com/pulse-rt/pulse/destination"
)

// Headers of every delivery (destination/sign.go, where the webhook sink
// signs).
const (
	SignatureHeader = destination.SignatureHeader // sha256=<hex HMAC of "<timestamp>.<body>">
	TimestampHeader = destination.TimestampHeader // Unix seconds when the attempt was signed
	DeliveryHeader  = destination.DeliveryHeader  // the record's change_id: dedupe on it
	SegmentHeader   = destination.SegmentHeader
	ChangeHeader    = destination.ChangeHeader  // enter or exit
	AttemptHeader   = destination.AttemptHeader // 1 for the first try
)

// Errors Verify returns.
var (
	ErrNoSignature  = destination.ErrNoSignature
	ErrBadSignature = destination.ErrBadSignature
	ErrTooOld       = destination.ErrTooOld
)

// Sign returns the X-Pulse-Signature value for body sent at ts.
func Sign(secret string, ts int64, body []byte) string { return destination.Sign(secret, ts, body) }

// Verify checks a delivery's headers against its raw body: the signature
// must match and the timestamp be within tolerance of now (5 minutes is
// a good tolerance; 0 skips the check).
func Verify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	return destination.Verify(secret, h, body, now, tolerance)
}
