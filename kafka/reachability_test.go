package kafka

import (
	"errors"
	"math"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestReachability(t *testing.T) {
	r := NewReachability()
	refused := errors.New("connection refused")
	seed := kgo.BrokerMetadata{NodeID: math.MinInt32, Host: "127.0.0.1", Port: 9092}
	b1 := kgo.BrokerMetadata{NodeID: 1, Host: "127.0.0.1", Port: 9092}
	b2 := kgo.BrokerMetadata{NodeID: 2, Host: "127.0.0.2", Port: 9092}
	isDown := func() bool {
		select {
		case <-r.Gone():
			return r.Err() != nil
		default:
			if r.Err() != nil {
				t.Fatal("Err set while Gone is open")
			}
			return false
		}
	}
	f := func(meta kgo.BrokerMetadata, err error, wantDown bool) {
		t.Helper()
		r.OnBrokerConnect(meta, 0, nil, err)
		if got := isDown(); got != wantDown {
			t.Fatalf("after a dial of node %d (err %v): down %v, want %v", meta.NodeID, err, got, wantDown)
		}
	}
	if isDown() {
		t.Fatal("down before any dial")
	}
	f(seed, refused, true) // the only broker known
	f(seed, nil, false)
	f(b1, nil, false)
	f(b1, refused, true) // the seed is not dialled again once the cluster's brokers are known
	f(b1, nil, false)
	f(b2, refused, false) // one of two brokers down: the other takes its partitions
	f(b1, refused, true)
	f(b2, nil, false)
	if ReachabilityOf(mustClient(t)) == nil {
		t.Fatal("ProducerOpts installs no Reachability")
	}
}

func mustClient(t *testing.T) *kgo.Client {
	cl, err := kgo.NewClient(append(ProducerOpts(), kgo.SeedBrokers("127.0.0.1:1"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}
