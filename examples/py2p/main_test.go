package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestRun runs the tutorial: every step prints what py2p's tutorial
// shows, in order, and a node of another subnet is refused with an error
// that names the mismatch, on both sides.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, []string{"-batch", "3"}, &out); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out.String())
	}
	want := `bob connects to alice, carol to bob: alice - bob - carol
  bob, on connect: alice (outbound)
  bob, on connect: carol (inbound)
  bob, once connect: alice
alice sends one broadcast of two packets: "this is", "a test"
  bob, Recv: ["this is" "a test"] from alice, 1 hop(s)
  carol, Recv: ["this is" "a test"] from alice, 2 hop(s)
alice asks "Did you get this?"; carol replies
  alice, Recv: ["yes" "I did"] from carol (a whisper)
carol sends 3 broadcasts; alice takes them with RecvBatch(10) and replies to each
  alice got ["message 1"] from carol
  alice got ["message 2"] from carol
  alice got ["message 3"] from carol
  carol got 3 replies from alice, the first ["Replying to a list"]
carol registers two handlers: the first claims "test" and answers "success", the second notes what it sees
alice sends "test", then "other"
  alice, Recv: ["success"] from carol (handler 1 claimed "test")
  carol, Recv: ["other"] (no handler claimed it)
  handler 2 saw: ["other"]
bob's once-subscriber was called 1 time(s) in all
status and counters
  alice: ok: 1 connections; 4 broadcast(s) sent, 3 whisper(s) sent
  bob: ok: 2 connections; 0 broadcast(s) sent, 0 whisper(s) sent
  carol: ok: 1 connections; 3 broadcast(s) sent, 2 whisper(s) sent
dave, on subnet "mesh2", connects to alice, on the default subnet
  dave, Connect: error; errors.Is(err, mesh.ErrProtocolMismatch) = true
  alice, Status: a problem, protocol mismatch: true
  alice: 1 connection(s), 1 protocol mismatch(es) counted
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestBadFlags: a bad flag or value is an error, not a run.
func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-batch", "0"}, {"-nope"}} {
		var out strings.Builder
		if err := run(context.Background(), args, &out); err == nil {
			t.Errorf("run(%q): no error", args)
		}
	}
}
