package mesh

import (
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/faultnet"
	"github.com/meshsock/meshsock/internal/testnet"
)

// TestLaterCopyWithMoreHopsLeftRelayed: with a hop limit, the first copy
// to arrive used to decide relaying. Here the origin O has hop limit 3 and
// reaches A directly over a slow link and in three hops over a fast one
// (O-B-C-A); D hangs off A. The long path's copy reaches A first with no
// hops left, so A delivers it without relaying; the direct copy arrives
// later with two hops left, and A must relay it then, so that D, two hops
// from O, gets the broadcast. Every node delivers it once.
func TestLaterCopyWithMoreHopsLeftRelayed(t *testing.T) {
	c := startCluster(t, 4) // A, B, C, D
	slow := faultnet.NewDialer(faultnet.Faults{Latency: 300 * time.Millisecond})
	o, err := NewSocket("127.0.0.1:0", WithDiscovery(false), WithHopLimit(3),
		WithLogger(testnet.Logger(t).With("i", "O")), WithBaseOptions(base.WithDialer(slow.DialContext)))
	if err != nil {
		t.Fatal(err)
	}
	c.nodes = append(c.nodes, o)
	const A, B, C, D, O = 0, 1, 2, 3, 4
	// O dials only A (the slow link); B dials O.
	c.wire([][2]int{{O, A}, {B, O}, {B, C}, {C, A}, {A, D}})
	in := c.collect()
	if err := o.Send(ctxT(t, 10*time.Second), []byte("far")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return in.count(D, "far") == 1 },
		"D, two hops from the origin, to get the broadcast")
	c.waitQuiet()
	for _, n := range []int{A, B, C, D} {
		if got := in.count(n, "far"); got != 1 {
			t.Fatalf("node %d delivered the broadcast %d times, want 1", n, got)
		}
	}
	if got := c.nodes[A].Stats().Rerelayed; got != 1 {
		t.Fatalf("A relayed again %d times, want 1", got)
	}
}
