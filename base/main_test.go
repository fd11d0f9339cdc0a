package base_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any goroutine outlives the tests: every
// goroutine a Socket or Conn starts must end by the time Close returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
