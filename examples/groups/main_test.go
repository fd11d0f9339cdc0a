package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestRun runs the example with two nodes on version 1 and one on
// version 2 besides the caller: each answers with its own version.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, []string{"-v1", "2", "-v2", "1", "-message", "hi"}, &out); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out.String())
	}
	want := `group v1: 2 node(s) besides peer3
  v1-peer-1 (group v1) answered "hi Version 1"
  v1-peer-2 (group v1) answered "hi Version 1"
group v2: 1 node(s) besides peer3
  v2-peer-1 (group v2) answered "hi Version 2"
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestBadFlags: a bad flag or value is an error, not a run.
func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-v1", "0"}, {"-v2", "-1"}, {"-nope"}} {
		var out strings.Builder
		if err := run(context.Background(), args, &out); err == nil {
			t.Errorf("run(%q): no error", args)
		}
	}
}
