package httpapi

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/valyala/fasthttp"
	"golang.org/x/time/rate"
)

// Auth is how a server checks the key of a request: the keys in force
// (replaced on reload) and a limit on failed authentications per client,
// which outlives reloads. A client (an IP address, an IPv6 /64) that sent
// more than FailureBurst missing or unknown keys, and then more than one
// every FailureEvery, is answered 429 with Retry-After before its key is
// looked at, whatever key it sends: guessing keys costs time.
//
// Callers check the key before they read the body: a caller without a
// valid key costs a hash and an answer.
type Auth struct {
	keys     atomic.Pointer[Keys]
	failures *failures
}

// The failure limit's defaults.
const (
	FailureBurst = 20
	FailureEvery = 3 * time.Second
	// maxClients bounds the clients tracked; past it, clients with no
	// recent failure are forgotten first.
	maxClients = 1 << 16
)

// NewAuth checks keys with the default failure limit.
func NewAuth(keys []config.APIKey) *Auth {
	a := &Auth{failures: newFailures(FailureBurst, FailureEvery, time.Now)}
	a.Reload(keys)
	return a
}

// Reload takes the keys of a new config; the failure counts stay.
func (a *Auth) Reload(keys []config.APIKey) { a.keys.Store(NewKeys(keys)) }

// SetClock makes the failure limit read now instead of the wall clock
// (tests).
func (a *Auth) SetClock(now func() time.Time) { a.failures.now = now }

// Authorize checks secret (from KeyFromHeaders or the body) for scope on
// behalf of ctx's client. When it fails it answers 401, 403 or 429 itself
// and returns false.
func (a *Auth) Authorize(ctx *fasthttp.RequestCtx, secret, scope string) (*config.APIKey, bool) {
	// Naming the client costs an allocation: only when some client failed.
	client := ""
	if a.failures.count.Load() > 0 {
		client = ClientOf(ctx)
		if wait, blocked := a.failures.blocked(client); blocked {
			WriteAuthError(ctx, ErrTooManyFailures, wait)
			return nil, false
		}
	}
	key, retry, err := a.keys.Load().Check(secret, scope)
	if err != nil {
		if errors.Is(err, ErrNoKey) || errors.Is(err, ErrUnknownKey) {
			if client == "" {
				client = ClientOf(ctx)
			}
			a.failures.fail(client)
		}
		WriteAuthError(ctx, err, retry)
		return nil, false
	}
	return key, true
}

// AuthorizeEither is Authorize for a key with scope or else alt: the scope
// checked is alt for a known key that holds alt and not scope, else scope.
func (a *Auth) AuthorizeEither(ctx *fasthttp.RequestCtx, secret, scope, alt string) (*config.APIKey, bool) {
	if e := a.keys.Load().lookup(secret); e != nil && !e.key.HasScope(scope) && e.key.HasScope(alt) {
		scope = alt
	}
	return a.Authorize(ctx, secret, scope)
}

// ClientOf names the client of a request for the failure limit: its IP
// address, or its /64 for IPv6, where one host holds a whole prefix.
func ClientOf(ctx *fasthttp.RequestCtx) string {
	ip := ctx.RemoteIP()
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String()
}

// failures is a token bucket of failed authentications per client. The
// clients are a sync.Map: every request of a known client reads it, and
// only failures write.
type failures struct {
	burst int
	every rate.Limit
	now   func() time.Time

	clients sync.Map // client -> *rate.Limiter
	count   atomic.Int64
	mu      sync.Mutex // adding and forgetting clients
}

func newFailures(burst int, every time.Duration, now func() time.Time) *failures {
	return &failures{burst: burst, every: rate.Every(every), now: now}
}

// blocked reports whether client has no failure left, and for how long.
func (f *failures) blocked(client string) (time.Duration, bool) {
	v, ok := f.clients.Load(client)
	if !ok {
		return 0, false
	}
	l := v.(*rate.Limiter)
	now := f.now()
	if l.TokensAt(now) >= 1 {
		return 0, false
	}
	r := l.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	r.CancelAt(now)
	return wait, true
}

// fail spends one of client's failures.
func (f *failures) fail(client string) {
	now := f.now()
	v, ok := f.clients.Load(client)
	if !ok {
		f.mu.Lock()
		if v, ok = f.clients.Load(client); !ok {
			if f.count.Load() >= maxClients {
				f.forget(now)
			}
			v = rate.NewLimiter(f.every, f.burst)
			f.clients.Store(client, v)
			f.count.Add(1)
		}
		f.mu.Unlock()
	}
	v.(*rate.Limiter).AllowN(now, 1)
}

// forget drops the clients whose bucket has refilled, and if none has,
// every client: a flood of addresses must not grow the map without bound.
// f.mu is held.
func (f *failures) forget(now time.Time) {
	f.clients.Range(func(c, v any) bool {
		if v.(*rate.Limiter).TokensAt(now) >= float64(f.burst) {
			f.clients.Delete(c)
			f.count.Add(-1)
		}
		return true
	})
	if f.count.Load() >= maxClients {
		f.clients.Clear()
		f.count.Store(0)
	}
}
