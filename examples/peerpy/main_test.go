package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestRun runs the example and checks its whole output.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	// A port range of its own, away from the other examples' tests.
	if err := run(ctx, []string{"-port", "47360", "-range", "16"}, &out); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out.String())
	}
	want := `alice and bob started, given no address to connect to
bob discovered alice (1 address) and dialled her
alice: connected to bob
mallory's offer to alice was denied (mesh.ErrNotAuthorized)
alice: data from bob (json): {Sensor:kitchen Temp:21.5 Tags:[indoor ground floor]}
alice: data from bob (bytes): ca fe 01
bob got alice's broadcast: "hello, peers"
alice: the connection with bob closed
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-range", "1"}, {"-port", "0"}, {"-nope"}} {
		var out strings.Builder
		if err := run(context.Background(), args, &out); err == nil {
			t.Errorf("run(%q): no error", args)
		}
	}
}
