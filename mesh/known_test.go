package mesh

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// TestKnownKeepsLinkedMembers: a full table of known peers makes room for
// news by forgetting members this node never had a link with, not the
// ones it had (a member across a long cut hears no news, but must still
// be redialled when the network returns). Before, the table dropped the
// member heard of least recently, whoever it was.
func TestKnownKeepsLinkedMembers(t *testing.T) {
	c := startCluster(t, 2)
	x := startCluster(t, 1, WithMaxKnownPeers(8), WithMaxKnownPerSource(64)).nodes[0]
	ctx := ctxT(t, 10*time.Second)
	for _, o := range c.nodes {
		if err := x.Connect(ctx, o.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	// Node 0 vanishes; node 1 stays a neighbour.
	if err := c.nodes[0].Close(ctx); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 5*time.Second, func() bool { return len(x.Peers()) == 1 }, "x to lose node 0")
	src := protocol.NewNodeID() // a neighbour that names 20 new members
	for i := range 20 {
		rec, _ := fakeRecord(t, fmt.Sprintf("127.0.0.1:%d", 20000+i))
		x.known.store(rec, src)
	}
	for i, o := range c.nodes {
		if _, ok := knownAddr(x, o.ID()); !ok {
			t.Errorf("x forgot node %d, which it had a link with, to make room for news", i)
		}
	}
	if st := x.Stats(); st.KnownPeers != 8 || st.KnownEvictions < 14 {
		t.Errorf("x knows %d peers and forgot %d, want the table's bound, 8, and at least 14 forgotten",
			st.KnownPeers, st.KnownEvictions)
	}
}
