package chord

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the tests: every node the
// tests and benchmarks start is closed by then, and Close waits for all of
// its goroutines.
func TestMain(m *testing.M) {
	code := m.Run()
	closeBenchRing()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
