package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestRun runs the example across two relays: peer2 finds peer1 by its
// tags, the call is printed on peer1 and answered, and the remote error
// and the unknown tag come back as such; every node closes cleanly.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, []string{"-relays", "2", "-message", "hello"}, &out); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out.String())
	}
	want := []string{
		"peer2 knows 4 members of the mesh (itself included)",
		"peer2 finds peer1 serving connected_function",
		`peer1 prints "hello" (called by `,
		"peer2: peer1 answered 5 (bytes printed)",
		"peer2: remote error from peer1: nothing to print",
		`peer2: peer1 serves no "no_such_function" (mesh.ErrUnknownTag)`,
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: %q, want %q", i+1, lines[i], w)
		}
	}
}

// TestBadFlags: a bad flag or value is an error, not a run.
func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-relays", "-1"}, {"-message", ""}, {"-nope"}} {
		var out strings.Builder
		if err := run(context.Background(), args, &out); err == nil {
			t.Errorf("run(%q): no error", args)
		}
	}
}
