package mesh

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// links returns, per node, how many connections it has established so far
// and the set of its live ones. It first waits until the counts cover the
// live links (base counts a connection just after registering it).
func (c *cluster) links() ([]uint64, []map[*base.Conn]bool) {
	c.t.Helper()
	testnet.Eventually(c.t, 10*time.Second, func() bool {
		for _, s := range c.nodes {
			if s.Base().Stats().Connects < uint64(len(s.Base().Conns())) {
				return false
			}
		}
		return true
	}, "connection counts to settle")
	counts := make([]uint64, len(c.nodes))
	sets := make([]map[*base.Conn]bool, len(c.nodes))
	for i, s := range c.nodes {
		counts[i] = s.Base().Stats().Connects
		sets[i] = make(map[*base.Conn]bool)
		for _, conn := range s.Base().Conns() {
			sets[i][conn] = true
		}
	}
	return counts, sets
}

// exchangeThroughMesh whispers from node a to node b and replies back, and
// checks that each arrives once, as a whisper, at its target only, after
// crossing hops links, and that no node gained a connection.
func exchangeThroughMesh(t *testing.T, c *cluster, a, b int, hops uint8) {
	t.Helper()
	before, beforeSet := c.links()
	ctx := ctxT(t, 30*time.Second)
	from, to := c.nodes[a], c.nodes[b]
	if err := from.Whisper(ctx, to.ID(), []byte("question"), []byte("two")); err != nil {
		t.Fatal(err)
	}
	m, err := to.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkWhisper(t, m, from.ID(), hops, "question", "two")
	if err := m.Reply(ctx, []byte("answer")); err != nil {
		t.Fatal(err)
	}
	r, err := from.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkWhisper(t, r, to.ID(), hops, "answer")

	c.waitQuiet()
	for i, s := range c.nodes {
		if m, ok := s.TryRecv(); ok {
			t.Errorf("node %d received %q (type %s, flag %s) too", i, m.Packets, m.Type, m.Flag)
		}
	}
	after, afterSet := c.links()
	for i := range c.nodes {
		if after[i] != before[i] || !maps.Equal(afterSet[i], beforeSet[i]) {
			t.Errorf("node %d: %d connections established, %d live; before %d and %d",
				i, after[i], len(afterSet[i]), before[i], len(beforeSet[i]))
		}
	}
	// The whisper searched for its target, whose flooded answer taught
	// the way; the reply knew the way from the whisper. Both went hop by
	// hop, not flooded.
	for i, s := range []*Socket{from, to} {
		if st := s.Stats(); st.RoutedSent != 1 || st.MeshRoutedWhispers != 0 || st.RoutedWhispers != 1 || st.Whispers != 1 {
			t.Errorf("whisper stats %d routed sent, %d mesh-routed, %d to non-neighbours, %d in all; want 1, 0, 1, 1",
				st.RoutedSent, st.MeshRoutedWhispers, st.RoutedWhispers, st.Whispers)
		} else if st.RouteRequests != uint64(1-i) {
			t.Errorf("%d route requests; want 1 for the whisper, 0 for the reply", st.RouteRequests)
		}
	}
}

func checkWhisper(t *testing.T, m *Message, sender protocol.NodeID, hops uint8, packets ...string) {
	t.Helper()
	if m.Type != flags.Whisper || m.Flag != flags.Whisper || m.Sender != sender || m.Hops != hops {
		t.Fatalf("got type %s flag %s from %s after %d hops; want a whisper from %s after %d",
			m.Type, m.Flag, m.Sender.Short(), m.Hops, sender.Short(), hops)
	}
	if len(m.Packets) != len(packets) {
		t.Fatalf("got packets %q, want %q", m.Packets, packets)
	}
	for i, p := range packets {
		if string(m.Packets[i]) != p {
			t.Fatalf("got packets %q, want %q", m.Packets, packets)
		}
	}
}

// TestWhisperThroughMeshWithoutDiscovery: with discovery off, a whisper
// and its reply across four hops travel through the mesh, arrive once at
// their target only, and no node opens a connection.
func TestWhisperThroughMeshWithoutDiscovery(t *testing.T) {
	c := startCluster(t, 5)
	c.wire(testnet.Line(5))
	exchangeThroughMesh(t, c, 0, 4, 4)
}

// TestWhisperThroughMeshWithoutFreeSlot: with discovery on but every
// outgoing slot taken at both ends, the whisper and its reply go through
// the mesh instead of failing or dialling beyond the cap.
func TestWhisperThroughMeshWithoutFreeSlot(t *testing.T) {
	inner := startCluster(t, 3)
	ends := startCluster(t, 2, WithDiscovery(true), WithMaxOutgoing(1))
	// Each sub-cluster closes its own nodes; c only arranges them.
	c := &cluster{t: t, nodes: []*Socket{ends.nodes[0], inner.nodes[0], inner.nodes[1], inner.nodes[2], ends.nodes[1]}}
	// Each end dials its one neighbour, which fills its quota.
	c.wire([][2]int{{0, 1}, {1, 2}, {2, 3}, {4, 3}})
	exchangeThroughMesh(t, c, 0, 4, 4)
}

// TestReplyFromHandler: a handler may Reply on its reader goroutine, as
// docs/mesh.md shows, to a sender four hops away with discovery off: the
// reply searches no route (whose answer could arrive on the blocked
// reader) and goes at once, hop by hop, along the way the broadcast came.
func TestReplyFromHandler(t *testing.T) {
	c := startCluster(t, 5, WithRouteTimeout(500*time.Millisecond))
	c.wire(testnet.Line(5))
	replied := make(chan error, 1)
	c.nodes[4].RegisterHandler(base.HandlerFunc(func(m *Message) bool {
		if string(m.Packets[0]) != "ping" {
			return false
		}
		replied <- m.Reply(context.Background(), []byte("pong"))
		return true
	}))
	ctx := ctxT(t, 10*time.Second)
	if err := c.nodes[0].Send(ctx, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := <-replied; err != nil {
		t.Fatalf("Reply from a handler: %v", err)
	}
	r, err := c.nodes[0].Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkWhisper(t, r, c.nodes[4].ID(), 4, "pong")
	if st := c.nodes[4].Stats(); st.RouteRequests != 0 || st.RoutedSent != 1 || st.MeshRoutedWhispers != 0 {
		t.Fatalf("replier: %d route requests, %d routed, %d flooded; want 0, 1, 0",
			st.RouteRequests, st.RoutedSent, st.MeshRoutedWhispers)
	}
}

// TestForwardIsNotDeliveredElsewhere: a forwarded whisper addressed to
// another node is relayed but never handed to the relays' handlers.
func TestForwardIsNotDeliveredElsewhere(t *testing.T) {
	c := startCluster(t, 3)
	c.wire(testnet.Line(3))
	ctx := ctxT(t, 10*time.Second)
	stranger := protocol.NewNodeID()
	if err := c.nodes[0].whisperThroughMesh(ctx, stranger, flags.Whisper, [][]byte{[]byte("lost")}); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[0].whisperThroughMesh(ctx, c.nodes[2].ID(), flags.Whisper, [][]byte{[]byte("found")}); err != nil {
		t.Fatal(err)
	}
	m, err := c.nodes[2].Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkWhisper(t, m, c.nodes[0].ID(), 2, "found")
	c.waitQuiet()
	for i, s := range c.nodes {
		if m, ok := s.TryRecv(); ok {
			t.Errorf("node %d received %q", i, m.Packets)
		}
	}
	// Both went through node 1, and on to node 2 (relay before handling).
	// Node 1 counts a relay after it has queued the copy, so node 2 may
	// hold the second one, and the network be quiet, a moment before the
	// count moves (1 in 20 runs under -race).
	testnet.Eventually(t, 10*time.Second, func() bool { return c.nodes[1].Stats().Relayed >= 2 },
		"node 1 to count both relays")
	if got := c.nodes[1].Stats().Relayed; got != 2 {
		t.Fatalf("node 1 relayed %d messages, want 2", got)
	}
}

// TestForwardWireLayout: on the wire, a whisper through the mesh is a
// broadcast with sub-flag forward and packets [target, packets...], as
// docs/protocol.md §12 says.
func TestForwardWireLayout(t *testing.T) {
	c := startCluster(t, 1)
	c.intruder(c.nodes[0])
	peer := c.extras[len(c.extras)-1]
	ctx := ctxT(t, 10*time.Second)
	if err := c.nodes[0].WaitPeers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	target := protocol.NewNodeID()
	if err := c.nodes[0].whisperThroughMesh(ctx, target, flags.Whisper, [][]byte{[]byte("hi"), {}}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := peer.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Type != flags.Broadcast {
			continue // peer lists
		}
		if m.Flag != flags.Forward || m.Sender != c.nodes[0].ID() || m.HopLimit != DefaultHopLimit ||
			len(m.Packets) != 3 || string(m.Packets[0]) != string(target[:]) ||
			string(m.Packets[1]) != "hi" || len(m.Packets[2]) != 0 {
			t.Fatalf("got type %s flag %s from %s, hop limit %d, packets %x",
				m.Type, m.Flag, m.Sender.Short(), m.HopLimit, m.Packets)
		}
		return
	}
}
