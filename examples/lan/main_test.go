package main

import (
	"context"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// freeRange returns the first of n consecutive ports free for TCP and UDP
// on 127.0.0.1 a moment ago.
func freeRange(t *testing.T, n int) int {
	t.Helper()
	for range 100 {
		start, ok := 20000+rand.N(40000), true
		for p := start; p < start+n && ok; p++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if ok = err == nil; !ok {
				break
			}
			pc, err := net.ListenPacket("udp4", "127.0.0.1:"+strconv.Itoa(p))
			ln.Close()
			if ok = err == nil; ok {
				pc.Close()
			}
		}
		if ok {
			return start
		}
	}
	t.Fatal("no free port range")
	return 0
}

// TestRun runs the example with three nodes: each finds the two others,
// and node-1's broadcast reaches both over the links they made.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	port := strconv.Itoa(freeRange(t, 4))
	if err := run(ctx, []string{"-nodes", "3", "-port", port, "-range", "4"}, &out); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out.String())
	}
	want := `3 nodes started with no address to connect to
node-1 found 2 node(s): node-2 node-3
node-2 found 2 node(s): node-1 node-3
node-3 found 2 node(s): node-1 node-2
one mesh: node-1's broadcast reached node-2 ("hello"), node-3 ("hello")
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestBadFlags: a bad flag or value is an error, not a run.
func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-nodes", "1"}, {"-nodes", "9", "-range", "8"}, {"-nope"}} {
		var out strings.Builder
		if err := run(context.Background(), args, &out); err == nil {
			t.Errorf("run(%q): no error", args)
		}
	}
}
