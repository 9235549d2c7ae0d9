package kafka

import (
	"errors"
	"sync"
	"testing"
)

// TestFailures: promises from many goroutines; Err joins every failure
// and nothing else.
func TestFailures(t *testing.T) {
	var f Failures
	a, b := errors.New("a"), errors.New("b")
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch i {
			case 10:
				f.Promise(nil, a)
			case 20:
				f.Promise(nil, b)
			default:
				f.Promise(nil, nil)
			}
		}()
	}
	wg.Wait()
	if err := f.Err(); !errors.Is(err, a) || !errors.Is(err, b) {
		t.Fatalf("Err() = %v, want both failures", err)
	}
	var none Failures
	none.Promise(nil, nil)
	if err := none.Err(); err != nil {
		t.Fatalf("no failure, Err() = %v", err)
	}
}
