package ingest

import (
	"fmt"
	"testing"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/identity"
)

// BenchmarkSuppressedCheck is what the suppression check adds to every
// event ingest takes (Server.suppressed on the record's key): with no
// Suppressions (a server without them), with nothing suppressed, and with
// 100k suppressed ids (a miss and a hit).
func BenchmarkSuppressedCheck(b *testing.B) {
	many := make(map[string]identity.Suppression, 100_000)
	for i := range 100_000 {
		many[fmt.Sprintf("user-%d", i)] = identity.Suppression{RequestID: "d"}
	}
	for _, c := range []struct {
		name string
		ids  map[string]identity.Suppression
		key  string
		off  bool
	}{
		{"off", nil, "user-42", true},
		{"none", map[string]identity.Suppression{}, "user-42", false},
		{"100k-miss", many, "user-x42", false},
		{"100k-hit", many, "user-42", false},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := &Server{}
			if !c.off {
				s.sup = NewSuppressions(&config.Config{}, nil)
				s.sup.Load(c.ids)
			}
			key := []byte(c.key)
			b.ReportAllocs()
			for b.Loop() {
				s.suppressed(key)
			}
		})
	}
}
