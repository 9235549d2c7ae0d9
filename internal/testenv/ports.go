package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// A port picked for a server to listen on later (a child process, a
// server a test starts after choosing its address) is taken from below the
// kernel's ephemeral range (net.ipv4.ip_local_port_range starts at 32768
// by default): a port the kernel handed to listen(":0") comes from that
// range, and so do the source ports of outgoing connections, so between
// the pick and the server's own bind any Kafka or HTTP client of a test
// running beside it could take it ("port in use"). Below the range only
// another pick competes, and picks are random and remembered per process.
const (
	pickLow  = 20000
	pickHigh = 32767
)

var picked struct {
	sync.Mutex
	ports map[int]bool
}

// FreePort returns a loopback port nothing listens on, for a server the
// test starts later, outside the ephemeral range (see above).
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := pickPort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pickPort() (int, error) {
	picked.Lock()
	defer picked.Unlock()
	if picked.ports == nil {
		picked.ports = map[int]bool{}
	}
	for range 1000 {
		p := pickLow + rand.IntN(pickHigh-pickLow+1)
		if picked.ports[p] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // in use
		}
		ln.Close()
		picked.ports[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("cannot find a free port in %d-%d", pickLow, pickHigh)
}
