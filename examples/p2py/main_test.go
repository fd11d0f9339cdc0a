package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meshsock/meshsock/chord"
	"go.uber.org/goleak"
)

// TestRun runs p2py's examples: A prints B's text, answers ADD with n+1,
// directly and after C bounced the request, and every node counts the
// three nodes of the ring.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, []string{"-text", "Hello!", "-n", "17"}, &out); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out.String())
	}
	want := `A listens; its ID is 34750f98-bd59-fcfc-946d-a45aaabe933b
B listens; its ID is 6a3803d5-f059-902a-1c6d-afbc9ba47292
B joined A's ring
B: sent a TEXT message to A's ID
A: (B) -> "Hello!"
A: ADD 17 requested by B; answering 18
B: 17 + 1 = 18 (answered by A)
B: ADD "seventeen": A answered ADD ERROR: not a number
C listens; its ID is b62e867f-a2f3-3afe-62d5-d6b1642e1621
C joined A's ring
C: cannot answer ADD; bouncing it to A's ID
A: ADD 18 requested by B, bounced 1 time(s) on the way; answering 19
B: asked C: 18 + 1 = 19 (answered by A)
network size, walking the ring from A: 3
network size, walking the ring from B: 3
network size, walking the ring from C: 3
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestBadFlags: a bad flag or value is an error, not a run.
func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-text", ""}, {"-n", "x"}, {"-nope"}} {
		var out strings.Builder
		if err := run(context.Background(), args, &out); err == nil {
			t.Errorf("run(%q): no error", args)
		}
	}
}

// TestRingSizeAlone: a node alone is a ring of one.
func TestRingSizeAlone(t *testing.T) {
	defer goleak.VerifyNone(t)
	s, err := chord.NewSocket("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, err := ringSize(ctx, s, 10); err != nil || n != 1 {
		t.Fatalf("ringSize = %d, %v; want 1", n, err)
	}
}

// TestRingSizeMax: the walk gives up past its bound rather than walking on.
func TestRingSizeMax(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var nodes []*chord.Socket
	defer func() {
		for _, s := range nodes {
			_ = s.Close(context.Background())
		}
	}()
	for range 2 {
		s, err := chord.NewSocket("127.0.0.1:0", chord.WithStabilizeInterval(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, s)
	}
	if _, err := nodes[1].Join(ctx, nodes[0].Addr().String()); err != nil {
		t.Fatal(err)
	}
	// The walk is exact once each node has the other as successor.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for nodes[0].Successor().ID != nodes[1].ID() || nodes[1].Successor().ID != nodes[0].ID() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("the ring of two did not settle")
		}
	}
	if n, err := ringSize(ctx, nodes[1], 1); err == nil {
		t.Fatalf("ringSize with max 1 on a ring of 2 = %d, no error", n)
	}
	if n, err := ringSize(ctx, nodes[1], 2); err != nil || n != 2 {
		t.Fatalf("ringSize from the node that joined = %d, %v; want 2", n, err)
	}
}
