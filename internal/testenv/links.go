package testenv

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/identity"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchLinks is the number of identifiers the identity-table benchmarks
// use: PULSE_BENCH_LINKS, else def.
func BenchLinks(def int) int {
	if v, err := strconv.Atoi(os.Getenv("PULSE_BENCH_LINKS")); err == nil && v > 0 {
		return v
	}
	return def
}

// ProduceIdentityLinks writes to topic, through cl, the links of an
// identity topic of n identifiers linked at at: people of one userId
// (u<i/3>) and two anonymousIds (a<i>), keyed by identifier, 10,000
// records a produce. It returns the last identifier written.
func ProduceIdentityLinks(tb testing.TB, cl *kgo.Client, topic string, n int, at time.Time) (last string) {
	tb.Helper()
	recs := make([]*kgo.Record, 0, 10_000)
	for i := range n {
		person := fmt.Sprint("u", i/3)
		id := identity.User(person)
		if i%3 != 0 {
			id = identity.Anonymous(fmt.Sprint("a", i))
		}
		last = id.String()
		v, err := identity.EncodeLink(identity.Link{Identifier: last, CanonicalID: person, At: at,
			MessageID: fmt.Sprint("m", i/3), Kind: identity.KindIdentify})
		if err != nil {
			tb.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(last), Value: v})
		if len(recs) == cap(recs) || i == n-1 {
			if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				tb.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	return last
}
