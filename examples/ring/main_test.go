package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestRun runs the example on a small ring: every key reaches its owner
// and every node closes cleanly.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	if err := run(4, 3, false); err != nil {
		t.Fatal(err)
	}
}
