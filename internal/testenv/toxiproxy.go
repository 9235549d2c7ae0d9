package testenv

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/collectors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Proxy is a TCP proxy in this process (toxiproxy as a library) between
// clients and one server, that injects network faults: a black hole,
// latency, connections reset.
type Proxy struct {
	p *toxiproxy.Proxy
	t testing.TB
}

// StartProxy proxies a free port on 127.0.0.1 to upstream until t ends.
func StartProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	srv.Metrics.ProxyMetrics = collectors.NewProxyMetricCollectors()
	p := toxiproxy.NewProxy(srv, t.Name(), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		fatal(t, fmt.Errorf("cannot start a proxy to %s: %w", upstream, err))
	}
	t.Cleanup(p.Stop)
	return &Proxy{p: p, t: t}
}

// Addr is where clients connect.
func (p *Proxy) Addr() string { return p.p.Listen }

// Dial dials the proxy whatever address it is given: for a client that
// learns its servers' addresses from them (a Kafka broker advertises its
// own), so that every connection goes through the proxy.
func (p *Proxy) Dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", p.Addr())
}

func (p *Proxy) add(name, typ, stream string, attrs string) {
	p.t.Helper()
	body := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"attributes":%s}`, name, typ, stream, attrs)
	if _, err := p.p.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
		fatal(p.t, fmt.Errorf("cannot add toxic %s: %w", name, err))
	}
}

// BlackHole drops every byte both ways, on the connections open and new
// ones (which are accepted, then hear nothing), as a network partition
// that sends no reset does. Heal ends it.
func (p *Proxy) BlackHole() {
	p.t.Helper()
	p.add("blackhole-up", "timeout", "upstream", `{"timeout":0}`)
	p.add("blackhole-down", "timeout", "downstream", `{"timeout":0}`)
}

// Latency delays every byte from the server by d.
func (p *Proxy) Latency(d time.Duration) {
	p.t.Helper()
	p.add("latency", "latency", "downstream", fmt.Sprintf(`{"latency":%d}`, d.Milliseconds()))
}

// ResetPeer resets every connection (TCP RST) after timeout, new ones too.
func (p *Proxy) ResetPeer(timeout time.Duration) {
	p.t.Helper()
	p.add("reset", "reset_peer", "upstream", fmt.Sprintf(`{"timeout":%d}`, timeout.Milliseconds()))
}

// Heal removes every fault.
func (p *Proxy) Heal() {
	p.p.Toxics.ResetToxics(context.Background())
}
