package system

import (
	"testing"

	"github.com/pulse-rt/pulse/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
