package destination

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/segment"
)

// TestBrokerOutageDestinations: the only Kafka broker is killed (SIGKILL)
// while a destination runs and started again 10 s later on the same port
// and data. The runner does not stop; it resumes on its own, and every
// change, from before the outage and after, reaches the receiver (at
// least once, each with its idempotency key).
func TestBrokerOutageDestinations(t *testing.T) {
	t.Parallel() // waits on brokers and processes more than it computes
	k := testenv.StartKafka(t)
	rc := newReceiver(t, idempotencyKey, func(http.ResponseWriter, string, int) int { return 204 })
	e := newEnv(t, []string{k.Addr()}, fmt.Sprintf(`
segments:
  - {name: lapsing, rule: 'x > 1'}
destinations:
  - name: crm
    type: http
    url: '%s/hook'
    template: '{"id": {{json .ID}}}'
    segments: [lapsing]
`, rc.srv.URL))
	e.run()
	want := map[string]bool{}
	send := func(from, to int) {
		var recs []segment.Record
		for n := from; n < to; n++ {
			r := change("lapsing", fmt.Sprintf("u%d", n%20), n%2 == 0, n, nil)
			recs = append(recs, r)
			want[r.ID] = true
		}
		e.produce(recs...)
	}
	delivered := func() int {
		got := map[string]bool{}
		for _, h := range rc.ok() {
			if want[h.key] {
				got[h.key] = true
			}
		}
		return len(got)
	}
	send(0, 40)
	testenv.WaitFor(t, 30*time.Second, "the first changes delivered", func() bool { return delivered() == 40 })
	if err := k.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Second)
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	send(40, 80)
	testenv.WaitFor(t, 60*time.Second, "every change delivered after the outage", func() bool { return delivered() == 80 })
}
