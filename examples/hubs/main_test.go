package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestRun runs the example with two hubs and three other publishers: the
// listener's hubs-only subscription gets the hubs' events and none of the
// others', though they all reach it; a hub then publishes with no
// subscriber left, without error.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, []string{"-hubs", "2", "-peers", "3", "-message", "news"}, &out); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out.String())
	}
	want := `listener knows 2 hub(s) among 6 members
published by [hub-1 hub-2 peer-1 peer-2 peer-3]
listener received "news" from hub-1
listener received "news" from hub-2
filtered out: 3 event(s) from nodes that are not hubs
hub-1 published again with no subscriber left: ok
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestBadFlags: a bad flag or value is an error, not a run.
func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-hubs", "0"}, {"-peers", "-1"}, {"-nope"}} {
		var out strings.Builder
		if err := run(context.Background(), args, &out); err == nil {
			t.Errorf("run(%q): no error", args)
		}
	}
}
