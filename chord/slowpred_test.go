package chord

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// TestSlowPredecessorKept: a node's predecessor is alive (frames keep
// arriving over its link) but too slow to answer check-predecessor within
// the RPC timeout, as on a loaded machine. The node must keep it, and so
// must not take its keys. Before, one probe that timed out made the node
// forget it; the node then took the next nearest node behind as its
// predecessor and answered lookups for the slow node's keys itself: wrong
// owners from a ring that had converged (TestRing64Hops under load).
func TestSlowPredecessorKept(t *testing.T) {
	opts := []Option{WithRPCTimeout(300 * time.Millisecond), WithCheckPredecessorInterval(100 * time.Millisecond)}
	m := newNode(t, opts...)
	n := newNode(t, opts...)
	joinVia(t, n, m)
	waitRing(t, []*Socket{m, n}, convergeWithin)

	// p, a bare base socket, sits between m and n: it tells n it is n's
	// predecessor, then never answers a chord message. Its link stays
	// alive: it pings every 50 ms.
	var key = base.GenerateKey()
	for !strictlyBetween(base.NodeIDOf(key), m.ID(), n.ID()) {
		key = base.GenerateKey()
	}
	p := testnet.NewBase(t, "127.0.0.1:0", base.WithProtocol(DefaultProtocol), base.WithLogger(testLogger(t)),
		base.WithKey(key), base.WithKeepalive(50*time.Millisecond, 10*time.Second))
	var probes atomic.Int64 // get-neighbours from n
	p.RegisterHandler(base.HandlerFunc(func(msg *base.Message) bool {
		if msg.Flag == flags.GetNeighbours && msg.Conn.ID() == n.ID() {
			probes.Add(1)
		}
		return true
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := p.Connect(ctx, n.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	env, _, err := p.NewEnvelope(flags.Whisper, flags.ChordNotify, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendControl(env); err != nil {
		t.Fatal(err)
	}
	predIs := func(id protocol.NodeID) bool {
		pred, ok := n.Predecessor()
		return ok && pred.ID == id
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return predIs(p.ID()) }, "n to take p as its predecessor")

	// Three probes: the first two timed out before the third was sent.
	n0 := probes.Load()
	testnet.Eventually(t, 10*time.Second, func() bool { return probes.Load() >= n0+3 || !predIs(p.ID()) },
		"n to probe p three times")
	if pred, _ := n.Predecessor(); pred.ID != p.ID() {
		t.Errorf("n forgot its slow but live predecessor p (%s) for %s", p.ID().Short(), pred.ID.Short())
	}
	// p owns its own ID: a lookup for it must not name n.
	lctx, lcancel := context.WithTimeout(context.Background(), time.Second)
	defer lcancel()
	owner, err := m.Lookup(lctx, p.ID())
	switch {
	case err == nil && owner.ID != p.ID():
		t.Fatalf("lookup of p's ID answered by %s", owner.ID.Short())
	case err != nil && !errors.Is(err, ErrTimeout):
		t.Fatalf("lookup of p's ID: %v, want ErrTimeout (p never answers)", err)
	}
}
