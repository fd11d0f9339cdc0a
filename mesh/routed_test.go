package mesh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// craftRouted returns a routed message of sender's for target, carrying
// sub and packets, signed with sender's key if newOrigin made it.
func craftRouted(sender protocol.NodeID, seq uint64, target protocol.NodeID, sub flags.Flag, packets ...[]byte) []byte {
	all := append([][]byte{target[:], {byte(sub)}}, packets...)
	e := protocol.Envelope{Type: flags.Whisper, Sub: flags.Routed, Sender: sender, Seq: seq,
		Time: time.Now().UnixNano(), HopLimit: DefaultHopLimit, Packets: all}
	if k, ok := originKeys.Load(sender); ok {
		return e.AppendSigned(nil, k.(ed25519.PrivateKey))
	}
	return e.AppendTo(nil)
}

// TestRoutedNoSearchWhenKnown: with membership on, the member heartbeats
// of a dial-only node three hops away teach the table the way to it, and
// a Request goes hop by hop at once, without a route search, and comes
// back the same way.
func TestRoutedNoSearchWhenKnown(t *testing.T) {
	c, far := unreachableLine(t, WithMembership(true))
	near := c.nodes[0]
	echo(far)
	testnet.Eventually(t, 30*time.Second, func() bool { return near.hops.lookup(far.ID()) != nil },
		"node 0 to learn the way to node 3 from its member messages")
	ctx := ctxT(t, 3*time.Second)
	if _, err := near.Request(ctx, far.ID(), []byte("ping")); err != nil {
		t.Fatal(err)
	}
	noDirectLink(t, near, far)
	st, fst := near.Stats(), far.Stats()
	if st.RouteRequests != 0 || st.RoutedSent != 1 || st.MeshRoutedWhispers != 0 {
		t.Fatalf("requester: %d route requests, %d routed, %d flooded; want 0, 1, 0", st.RouteRequests, st.RoutedSent, st.MeshRoutedWhispers)
	}
	if fst.RoutedDelivered != 1 || fst.RoutedSent != 1 || fst.RouteRequests != 0 {
		t.Fatalf("target: %d routed delivered, %d sent, %d route requests; want 1, 1, 0", fst.RoutedDelivered, fst.RoutedSent, fst.RouteRequests)
	}
	for i, s := range c.nodes[1:] {
		if r := s.Stats().RoutedRelayed; r != 2 {
			t.Fatalf("node %d relayed %d routed messages, want 2 (request and answer)", i+1, r)
		}
	}
}

// TestRoutedWireLayout: on the wire, a routed message is a whisper with
// sub-flag routed, the origin's hop limit, signed, with packets [target,
// carried sub-flag, packets...], as docs/protocol.md §12.5 says; it goes
// to the next hop the table names, at once, without a route search.
func TestRoutedWireLayout(t *testing.T) {
	c := startCluster(t, 1)
	c.intruder(c.nodes[0])
	peer := c.extras[len(c.extras)-1]
	ctx := ctxT(t, 10*time.Second)
	s := c.nodes[0]
	if err := s.WaitPeers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	via, _ := s.Base().Conn(peer.ID())
	target := protocol.NewNodeID()
	s.hops.learn(target, via, 1, time.Now().UnixNano())
	if err := s.Whisper(ctx, target, []byte("hi"), []byte{}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := peer.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Flag == flags.Peers || m.Flag == flags.MemberSync {
			continue
		}
		if m.Type != flags.Whisper || m.Flag != flags.Routed || m.Sender != s.ID() || m.HopLimit != DefaultHopLimit ||
			!m.Proven || len(m.Packets) != 4 || !bytes.Equal(m.Packets[0], target[:]) ||
			!bytes.Equal(m.Packets[1], []byte{byte(flags.Whisper)}) || string(m.Packets[2]) != "hi" || len(m.Packets[3]) != 0 {
			t.Fatalf("got type %s flag %s from %s, hop limit %d, proven %v, packets %x",
				m.Type, m.Flag, m.Sender.Short(), m.HopLimit, m.Proven, m.Packets)
		}
		break
	}
	if st := s.Stats(); st.RouteRequests != 0 || st.RoutedSent != 1 {
		t.Fatalf("%d route requests, %d routed; want 0, 1", st.RouteRequests, st.RoutedSent)
	}
}

// TestRoutedDuplicateAndForgery: a routed message for this node is
// delivered once, however many copies come; one whose signature does not
// check out is neither delivered nor taught as a path.
func TestRoutedDuplicateAndForgery(t *testing.T) {
	c := startCluster(t, 1)
	in := c.collect()
	conn := c.intruder(c.nodes[0])
	s := c.nodes[0]
	self := s.ID()
	ctx := ctxT(t, 10*time.Second)
	origin := newOrigin()
	env := craftRouted(origin, 1, s.ID(), flags.Whisper, []byte("once"))
	for range 3 {
		if err := conn.SendEnvelope(ctx, 0, env); err != nil {
			t.Fatal(err)
		}
	}
	// Signed with another key than the sender's.
	forger := newOrigin()
	bad := protocol.Envelope{Type: flags.Whisper, Sub: flags.Routed, Sender: protocol.NewNodeID(), Seq: 1,
		Time: time.Now().UnixNano(), HopLimit: DefaultHopLimit,
		Packets: [][]byte{self[:], {byte(flags.Whisper)}, []byte("forged")}}
	k, _ := originKeys.Load(forger)
	if err := conn.SendEnvelope(ctx, 0, bad.AppendSigned(nil, k.(ed25519.PrivateKey))); err != nil {
		t.Fatal(err)
	}
	if err := conn.SendEnvelope(ctx, 0, craftRouted(origin, 2, s.ID(), flags.Whisper, []byte("last"))); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return in.count(0, "last") == 1 })
	if n := in.count(0, "once"); n != 1 {
		t.Fatalf("delivered %d times, want once", n)
	}
	if in.count(0, "forged") != 0 {
		t.Fatal("a forged routed message was delivered")
	}
	st := s.Stats()
	if st.RoutedDelivered != 2 || st.RoutedDuplicates != 2 || st.BadSignatures != 1 {
		t.Fatalf("%d delivered, %d duplicates, %d bad signatures; want 2, 2, 1", st.RoutedDelivered, st.RoutedDuplicates, st.BadSignatures)
	}
	if s.hops.lookup(bad.Sender) != nil {
		t.Fatal("a forged message taught a path")
	}
	if s.hops.lookup(origin) == nil {
		t.Fatal("a proven routed message did not teach the way back")
	}
}

// TestRoutedRelayFallback: a relay that knows no next hop for a routed
// message's target sends it on to its other neighbours, whose tables do.
func TestRoutedRelayFallback(t *testing.T) {
	var mu sync.Mutex
	kinds := map[TraceKind]int{}
	c := startCluster(t, 4, WithTracer(TracerFunc(func(e TraceEvent) {
		mu.Lock()
		kinds[e.Kind]++
		mu.Unlock()
	})))
	c.wire(testnet.Line(4))
	in := c.collect()
	ctx := ctxT(t, 10*time.Second)
	// Every node learns the way to node 3 from its broadcast.
	if err := c.nodes[3].Send(ctx, []byte("here")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return in.count(0, "here") == 1 })
	target := c.nodes[3].ID()
	if c.nodes[0].hops.lookup(target) == nil {
		t.Fatal("node 0 did not learn the way to node 3")
	}
	// Node 1 loses its entry (as if evicted).
	via := c.nodes[1].hops.lookup(target)
	if via == nil || !c.nodes[1].hops.forget(target, via) {
		t.Fatal("node 1 had no entry for node 3")
	}
	if err := c.nodes[0].Whisper(ctx, target, []byte("lost?")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return in.count(3, "lost?") == 1 })
	c.waitQuiet()
	if st := c.nodes[1].Stats(); st.RoutedFallbacks != 1 {
		t.Fatalf("node 1: %d fallbacks, want 1", st.RoutedFallbacks)
	}
	mu.Lock()
	// Sent by node 0, relayed by node 2 (node 1 fell back), delivered at 3.
	if kinds[TraceRoutedFallback] != 1 || kinds[TraceRoutedRelay] != 2 || kinds[TraceRoutedDeliver] != 1 {
		t.Errorf("traced %d fallbacks, %d routed relays, %d routed deliveries; want 1, 2, 1",
			kinds[TraceRoutedFallback], kinds[TraceRoutedRelay], kinds[TraceRoutedDeliver])
	}
	mu.Unlock()
	if st := c.nodes[0].Stats(); st.RoutedSent != 1 || st.RouteRequests != 0 {
		t.Fatalf("node 0: %d routed, %d route requests; want 1, 0", st.RoutedSent, st.RouteRequests)
	}
	for i := range 3 {
		if in.count(i, "lost?") != 0 {
			t.Fatalf("node %d delivered a routed message for node 3", i)
		}
	}
}

// TestRouteTableDropsDeadHop: when the neighbour a path went through
// goes, the entry goes with it, and the next request finds another way.
func TestRouteTableDropsDeadHop(t *testing.T) {
	// 0-1-3 and 0-2-3.
	c := startCluster(t, 4)
	c.wire([][2]int{{0, 1}, {1, 3}, {0, 2}, {2, 3}})
	echo(c.nodes[3])
	src, dst := c.nodes[0], c.nodes[3]
	ctx := ctxT(t, 10*time.Second)
	if _, err := src.Request(ctx, dst.ID(), []byte("one")); err != nil {
		t.Fatal(err)
	}
	via := src.hops.lookup(dst.ID())
	if via == nil {
		t.Fatal("the search's answer taught no path")
	}
	dead := 1
	if via.ID() == c.nodes[2].ID() {
		dead = 2
	}
	if err := c.nodes[dead].Close(ctx); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return src.hops.lookup(dst.ID()) == nil },
		"the entry through the closed link to go")
	if n := src.Stats().RouteTableSize; n != 0 {
		t.Fatalf("table holds %d entries; want 0 (its only one went with the link)", n)
	}
	if _, err := src.Request(ctx, dst.ID(), []byte("two")); err != nil {
		t.Fatal(err)
	}
	if st := src.Stats(); st.RouteRequests != 2 || st.RoutedSent != 2 {
		t.Fatalf("%d route requests, %d routed; want 2, 2", st.RouteRequests, st.RoutedSent)
	}
}

// TestRouteTableNotPoisonedByRelays: a hostile neighbour cannot make a
// node route through it: it cannot forge a message of the target (the
// signature fails), nor replay one it got from the node (the seen-state
// sheds it before it is learnt), whatever hop count it claims.
func TestRouteTableNotPoisonedByRelays(t *testing.T) {
	c := startCluster(t, 4)
	c.wire(testnet.Line(4))
	echo(c.nodes[3])
	src, dst := c.nodes[0], c.nodes[3]
	conn := c.intruder(src)
	hostile := c.extras[len(c.extras)-1]
	ctx := ctxT(t, 10*time.Second)
	testnet.Eventually(t, 10*time.Second, func() bool { return len(src.Peers()) == 2 })

	// A forgery: the target's ID, the hostile node's key, "0 hops".
	k := base.GenerateKey()
	forged := protocol.Envelope{Type: flags.Broadcast, Sub: flags.Broadcast, Sender: dst.ID(), Seq: math.MaxUint64 - 1,
		Time: time.Now().UnixNano(), HopLimit: DefaultHopLimit, Packets: [][]byte{[]byte("I am node 3")}}
	if err := conn.SendEnvelope(ctx, 0, forged.AppendSigned(nil, k)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return src.Stats().BadSignatures == 1 })
	if src.hops.lookup(dst.ID()) != nil {
		t.Fatal("a forged broadcast taught a path")
	}

	// A replay: the target's genuine broadcast, as the node relays it to
	// the hostile neighbour, sent back at once claiming no hops.
	if err := dst.Send(ctx, []byte("genuine")); err != nil {
		t.Fatal(err)
	}
	var genuine *Message
	for genuine == nil {
		m, err := hostile.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == flags.Broadcast && m.Sender == dst.ID() {
			genuine = m
		}
	}
	before := src.Stats()
	if err := conn.SendEnvelope(ctx, 0, genuine.Envelope()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool {
		st := src.Stats()
		return st.Duplicates+st.Rerelayed > before.Duplicates+before.Rerelayed
	}, "the replayed copy to be judged")
	via := src.hops.lookup(dst.ID())
	if via == nil || via.ID() != c.nodes[1].ID() {
		t.Fatalf("the way to node 3 goes through %v, want node 1", via)
	}
	if _, err := src.Request(ctx, dst.ID(), []byte("ok?")); err != nil {
		t.Fatal(err)
	}
	if st := src.Stats(); st.RouteRequests != 0 || st.RoutedSent != 1 {
		t.Fatalf("%d route requests, %d routed; want 0, 1", st.RouteRequests, st.RoutedSent)
	}
}

// TestRoutedBlackholeForgotten: a neighbour that wins the table's entry
// for a node (by relaying its messages first, which an honest-looking
// neighbour can do) and then swallows routed messages costs one request
// its context: the entry is forgotten when the request times out, and
// the next one searches and finds the way around it.
func TestRoutedBlackholeForgotten(t *testing.T) {
	c := startCluster(t, 4)
	c.wire(testnet.Line(4))
	echo(c.nodes[3])
	src, dst := c.nodes[0], c.nodes[3]
	c.intruder(src) // reads everything, relays nothing
	ctx := ctxT(t, 10*time.Second)
	testnet.Eventually(t, 10*time.Second, func() bool { return len(src.Peers()) == 2 })
	hole, _ := src.Base().Conn(c.extras[0].ID())
	src.hops.learn(dst.ID(), hole, math.MaxUint64, time.Now().UnixNano())

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := src.Request(short, dst.ID(), []byte("lost"))
	cancel()
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("request through a black hole: %v, want ErrTimeout", err)
	}
	if st := src.Stats(); st.RoutesForgotten != 1 || src.hops.lookup(dst.ID()) != nil {
		t.Fatalf("%d routes forgotten, entry %v; want 1, none", st.RoutesForgotten, src.hops.lookup(dst.ID()))
	}
	if _, err := src.Request(ctx, dst.ID(), []byte("found")); err != nil {
		t.Fatal(err)
	}
	if via := src.hops.lookup(dst.ID()); via == nil || via.ID() != c.nodes[1].ID() {
		t.Fatalf("the way to node 3 goes through %v, want node 1", via)
	}
}

// TestReplyWithoutEntryFloods: a reply to a node the table has forgotten
// is flooded at once (no search, no dial), and still arrives.
func TestReplyWithoutEntryFloods(t *testing.T) {
	c := startCluster(t, 4, WithRouteTimeout(time.Minute))
	c.wire(testnet.Line(4))
	ctx := ctxT(t, 5*time.Second)
	if err := c.nodes[0].Send(ctx, []byte("q")); err != nil {
		t.Fatal(err)
	}
	m := recvFrom(ctx, t, c.nodes[3], c.nodes[0].ID())
	c.nodes[3].hops.forget(c.nodes[0].ID(), c.nodes[3].hops.lookup(c.nodes[0].ID()))
	if err := m.Reply(ctx, []byte("a")); err != nil {
		t.Fatal(err)
	}
	r := recvFrom(ctx, t, c.nodes[0], c.nodes[3].ID())
	checkWhisper(t, r, c.nodes[3].ID(), 3, "a")
	if st := c.nodes[3].Stats(); st.RoutedNoRoute != 1 || st.MeshRoutedWhispers != 1 || st.RouteRequests != 0 {
		t.Fatalf("%d without a route, %d flooded, %d route requests; want 1, 1, 0", st.RoutedNoRoute, st.MeshRoutedWhispers, st.RouteRequests)
	}
}

// TestRouteTableBounded: the table holds at most its bound, forgets an
// old entry to make room (preferring one whose link went), and drops an
// entry whose link closed when it is looked up.
func TestRouteTableBounded(t *testing.T) {
	tab := newNextHops(2)
	a, b, c := new(base.Conn), new(base.Conn), new(base.Conn)
	x, y, z := protocol.NewNodeID(), protocol.NewNodeID(), protocol.NewNodeID()
	tab.learn(x, a, 1, 1)
	tab.learn(y, b, 1, 2)
	tab.learn(z, c, 1, 3) // x is the oldest
	if tab.len() != 2 || tab.evicted.Load() != 1 || tab.lookup(x) != nil || tab.lookup(y) != b || tab.lookup(z) != c {
		t.Fatalf("table of %d, %d evicted, x %v, y %v, z %v", tab.len(), tab.evicted.Load(), tab.lookup(x), tab.lookup(y), tab.lookup(z))
	}
	// An older message changes nothing; a newer one moves the entry.
	tab.learn(y, c, 0, 4)
	if tab.lookup(y) != b {
		t.Fatal("an older message moved the entry")
	}
	tab.learn(y, c, 2, 5)
	if tab.lookup(y) != c || tab.perVia[b] != 0 || tab.perVia[c] != 2 {
		t.Fatalf("entry via %v, counts %v", tab.lookup(y), tab.perVia)
	}
	tab.linkDown(c)
	if tab.len() != 0 || len(tab.perVia) != 0 {
		t.Fatalf("%d entries, counts %v after their link went", tab.len(), tab.perVia)
	}

	if _, err := NewSocket("127.0.0.1:0", WithRouteTable(0)); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("WithRouteTable(0): %v, want ErrInvalidOption", err)
	}
	s, err := NewSocket("127.0.0.1:0", WithRouteTable(2))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if s.hops.max != 2 {
		t.Fatalf("WithRouteTable(2) gives a table of %d", s.hops.max)
	}
}

// TestRouteTableShare: a neighbour that makes up origins (each a fresh
// key, each message validly signed) cannot push the paths learnt through
// the other neighbours out of a full table.
func TestRouteTableShare(t *testing.T) {
	tab := newNextHops(8)
	honest, hostile := new(base.Conn), new(base.Conn)
	var genuine []protocol.NodeID
	for i := range 4 {
		id := protocol.NewNodeID()
		genuine = append(genuine, id)
		tab.learn(id, honest, 1, int64(i))
	}
	for i := range 100 {
		tab.learn(protocol.NewNodeID(), hostile, 1, int64(100+i))
	}
	for _, id := range genuine {
		if tab.lookup(id) != honest {
			t.Fatal("a genuine path was pushed out")
		}
	}
	if tab.perVia[hostile] != 4 || tab.refused.Load() != 96 {
		t.Fatalf("hostile neighbour holds %d entries, %d refused; want 4, 96", tab.perVia[hostile], tab.refused.Load())
	}
}

func FuzzParseRouted(f *testing.F) {
	id := protocol.NewNodeID()
	f.Add(id[:], []byte{byte(flags.Whisper)}, []byte("hi"))
	f.Add(id[:], []byte{byte(flags.AppRequest)}, []byte{})
	f.Add(id[:8], []byte{byte(flags.Whisper)}, []byte("x"))
	f.Add(id[:], []byte{byte(flags.Routed)}, []byte("x"))
	f.Add(id[:], []byte{}, []byte("x"))
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		for _, packets := range [][][]byte{{a}, {a, b}, {a, b, c}, {a, b, c, c}} {
			target, sub, rest, err := parseRouted(packets)
			if err != nil {
				if !errors.Is(err, protocol.ErrMalformed) {
					t.Fatalf("error %v does not match ErrMalformed", err)
				}
				continue
			}
			if !bytes.Equal(target[:], packets[0]) || !routedCarries(sub) || byte(sub) != packets[1][0] || len(rest) != len(packets)-2 {
				t.Fatalf("parsed %x into %s %s %x", packets, target, sub, rest)
			}
		}
	})
}

// TestBackgroundDialBackoff: a background dial that failed is not tried
// again for every message, only after the back-off; the memory of
// failures stays bounded.
func TestBackgroundDialBackoff(t *testing.T) {
	r := newRouter(8)
	id := protocol.NewNodeID()
	if !r.startDial(id, 0) || r.startDial(id, 0) {
		t.Fatal("a second dial started while the first ran")
	}
	r.endDial(id, false, 10, 100)
	if r.startDial(id, 50) {
		t.Fatal("dialled again within the back-off")
	}
	if !r.startDial(id, 100) {
		t.Fatal("not dialled again after the back-off")
	}
	r.endDial(id, true, 100, 200)
	if len(r.failed) != 0 {
		t.Fatal("a success left a failure behind")
	}
	for i := range 2 * maxFailedDials {
		x := protocol.NewNodeID()
		r.startDial(x, int64(i))
		r.endDial(x, false, int64(i), int64(i)+10)
	}
	if len(r.failed) > maxFailedDials {
		t.Fatalf("%d failures remembered, bound %d", len(r.failed), maxFailedDials)
	}
}

// TestRoutesSnapshot: Routes shows the next hop the table learnt for a
// node three hops away (its neighbour on the line), and drops it when that
// link goes.
func TestRoutesSnapshot(t *testing.T) {
	c, far := unreachableLine(t, WithMembership(true))
	near := c.nodes[0]
	testnet.Eventually(t, 30*time.Second, func() bool { _, ok := near.Routes()[far.ID()]; return ok },
		"node 0 to learn the way to node 3 from its member messages")
	if via := near.Routes()[far.ID()]; via != c.nodes[1].ID() {
		t.Fatalf("Routes names %s as the way to node 3, want node 1 %s", via.Short(), c.nodes[1].ID().Short())
	}
	if err := c.nodes[1].Close(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { _, ok := near.Routes()[far.ID()]; return !ok },
		"the entry through the closed link to go")
}
