package loadtest

import (
	"slices"
	"testing"
	"time"
)

// TestAlternate: the turns alternate, each gets its share of the time, and
// each side's turns add up into one result.
func TestAlternate(t *testing.T) {
	var order []string
	turn := func(name string, lat int64) func(time.Duration) *Result {
		return func(d time.Duration) *Result {
			order = append(order, name+" "+d.String())
			r := &Result{Name: name, Duration: d, Sent: 10, OK: 9, Errors: 1, Hist: newHist()}
			for range 9 {
				_ = r.Hist.RecordValue(lat)
			}
			return r
		}
	}
	b, s := alternate(3, 3*time.Second, turn("base", 100), turn("scorer", 400))
	if want := []string{"base 1s", "scorer 1s", "base 1s", "scorer 1s", "base 1s", "scorer 1s"}; !slices.Equal(order, want) {
		t.Fatalf("turns %v, want %v", order, want)
	}
	if b.Duration != 3*time.Second || b.Sent != 30 || b.OK != 27 || b.Errors != 3 || b.Hist.TotalCount() != 27 {
		t.Fatalf("baseline merged wrong: %+v", b)
	}
	if s.Quantile(99) < 399*time.Microsecond || s.Name != "scorer" {
		t.Fatalf("scorer merged wrong: %v %s", s.Quantile(99), s.Name)
	}
	order = nil
	alternate(0, time.Second, turn("base", 1), turn("scorer", 1))
	if len(order) != 2 {
		t.Fatalf("rounds 0 ran %v", order)
	}
}
