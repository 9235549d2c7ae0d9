package uuidtext

import (
	"testing"

	"github.com/google/uuid"
)

func TestAppendMatchesUUIDString(t *testing.T) {
	for range 100 {
		id := uuid.New()
		if got := string(Append([]byte("x"), id)); got != "x"+id.String() {
			t.Fatalf("Append %q, want x%s", got, id)
		}
	}
	id := uuid.New()
	var u [36]byte
	if n := testing.AllocsPerRun(100, func() {
		Append(u[:0], id)
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
