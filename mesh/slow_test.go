package mesh

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/faultnet"
	"github.com/meshsock/meshsock/internal/testnet"
)

// stalledPeer is a bare base socket that S dials through a listener whose
// connections can stop reading: a neighbour with a slow handler, or one
// that stopped reading its socket.
func (c *cluster) stalledPeer(s *Socket) *faultnet.Conn {
	c.t.Helper()
	ln, err := faultnet.Listen("127.0.0.1:0", faultnet.Faults{})
	if err != nil {
		c.t.Fatal(err)
	}
	peer := testnet.NewBase(c.t, "", base.WithListener(ln))
	c.extras = append(c.extras, peer)
	if err := s.Connect(ctxT(c.t, 10*time.Second), ln.Addr().String()); err != nil {
		c.t.Fatal(err)
	}
	conns := ln.Conns()
	if len(conns) != 1 {
		c.t.Fatalf("%d connections accepted", len(conns))
	}
	fc := conns[0]
	c.t.Cleanup(func() { fc.StopReading(false) }) // before the sockets close
	return fc
}

// TestSlowNeighbourDoesNotStallSend: Send waited on each neighbour's full
// queue in turn until its context ended, so one neighbour that stopped
// reading held up every broadcast. S has three healthy neighbours and one
// that stops reading. S's sends go on returning promptly (after one slow
// wait), the healthy neighbours receive at about the rate they did before
// the stall (measured side by side), and the stalled one's copies are
// counted as dropped.
func TestSlowNeighbourDoesNotStallSend(t *testing.T) {
	const slowWait = 100 * time.Millisecond
	c := startCluster(t, 4, WithSlowNeighbour(slowWait, time.Minute),
		WithBaseOptions(base.WithSendQueue(64, 1<<20)))
	c.wire([][2]int{{0, 1}, {0, 2}, {0, 3}})
	stalled := c.stalledPeer(c.nodes[0])
	in := c.collect()
	s := c.nodes[0]
	data := noise(4 << 10)

	// phase sends n broadcasts (each Send allowed 2 s, as a producer
	// might) and returns how long the healthy neighbours took to get them
	// all, and the longest Send.
	sent := 0
	phase := func(n int) (took, longest time.Duration) {
		start := time.Now()
		for i := range n {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			t0 := time.Now()
			err := s.Send(ctx, append(payload(sent+i), data...))
			cancel()
			if err != nil {
				t.Fatalf("Send %d: %v", sent+i, err)
			}
			longest = max(longest, time.Since(t0))
			if time.Since(start) > 20*time.Second {
				t.Fatalf("%d broadcasts took over 20 s (longest Send %v)", i+1, longest)
			}
		}
		sent += n
		testnet.Eventually(t, 60*time.Second, func() bool { return in.sum() == 3*sent }, "the healthy neighbours to get %d broadcasts each", sent)
		return time.Since(start), longest
	}
	const n = 3000
	base, _ := phase(n)
	stalled.StopReading(true)
	// Enough to fill the kernel's buffers and the stalled link's queue.
	stall, longest := phase(n)
	after, longestAfter := phase(n)
	t.Logf("healthy neighbours: %v per %d broadcasts before the stall, %v while it filled, %v after; longest Send %v, then %v",
		base, n, stall, after, longest, longestAfter)
	st := s.Stats()
	if st.SlowDrops == 0 {
		t.Fatal("the stalled neighbour's copies were not counted as dropped")
	}
	if longestAfter > 4*slowWait {
		t.Fatalf("a Send took %v with the neighbour known to be slow (slow wait %v)", longestAfter, slowWait)
	}
	// Generous: the goal is at most 5 % slower; this catches a Send that
	// waits on the stalled neighbour.
	if after > 3*base+time.Second {
		t.Fatalf("the healthy neighbours took %v for %d broadcasts with one neighbour stalled, %v before", after, n, base)
	}
	if st.SlowClosed != 0 || len(s.Peers()) != 4 {
		t.Fatalf("the slow link was closed before its bound: %d closed, %d peers", st.SlowClosed, len(s.Peers()))
	}
}

// TestSlowNeighbourClosed: a neighbour that stays slow for the bound is
// disconnected, counted and traced.
func TestSlowNeighbourClosed(t *testing.T) {
	traced := make(chan TraceEvent, 1)
	c := startCluster(t, 2, WithSlowNeighbour(20*time.Millisecond, 300*time.Millisecond),
		WithBaseOptions(base.WithSendQueue(16, 1<<20)),
		WithTracer(TracerFunc(func(e TraceEvent) {
			if e.Kind == TraceSlowClose {
				select {
				case traced <- e:
				default:
				}
			}
		})))
	c.wire(testnet.Line(2))
	s := c.nodes[0]
	stalled := c.stalledPeer(s)
	stalled.StopReading(true)
	data := noise(16 << 10)
	ctx := ctxT(t, 30*time.Second)
	for i := 0; s.Stats().SlowClosed == 0; i++ {
		if err := s.Send(ctx, data); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
		if ctx.Err() != nil {
			t.Fatal("the slow neighbour was never closed")
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return len(s.Peers()) == 1 }, "the slow link to go")
	select {
	case e := <-traced:
		if e.Peer == c.nodes[1].ID() {
			t.Fatal("the healthy neighbour was named")
		}
	default:
		t.Fatal("closing the slow link was not traced")
	}
}

// noise returns n random bytes, which compression cannot shrink.
func noise(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
