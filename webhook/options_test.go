package webhook_test

import (
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/webhook"
)

// TestOptionsDefaults: the defaults the Options doc comments state, and
// set fields left alone.
func TestOptionsDefaults(t *testing.T) {
	var o webhook.Options
	o.EnsureDefaults()
	if o.Client == nil || o.Client.CheckRedirect == nil || o.BaseBackoff != time.Second || o.MaxBackoff != 2*time.Minute ||
		o.FromStart || o.Log != slog.Default() {
		t.Errorf("defaults: %+v", o)
	}
	if err := o.Client.CheckRedirect(nil, nil); err != http.ErrUseLastResponse {
		t.Errorf("the default client follows redirects: %v", err)
	}
	c := &http.Client{}
	l := slog.New(slog.DiscardHandler)
	set := webhook.Options{Client: c, BaseBackoff: time.Millisecond, MaxBackoff: time.Second, FromStart: true, Log: l}
	set.EnsureDefaults()
	if set.Client != c || set.BaseBackoff != time.Millisecond || set.MaxBackoff != time.Second || !set.FromStart || set.Log != l {
		t.Errorf("set options changed: %+v", set)
	}
}
