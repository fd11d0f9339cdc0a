package mesh

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// TestRoutedWhisper: with discovery on, a whisper to a node five hops
// away that this node's table does not know is delivered to it alone, as
// a whisper, after a route search (hop by hop, or over the link the target
// dialled back if that came first); a direct connection follows in the
// background.
func TestRoutedWhisper(t *testing.T) {
	// The ends run discovery. The inner nodes do not, and advertise an
	// address where nobody listens, so that peer exchange cannot shortcut
	// the line: only the route search can connect the ends.
	inner := startCluster(t, 4, WithAdvertiseAddr("127.0.0.1:1"))
	ends := startCluster(t, 2, WithDiscovery(true))
	c := &cluster{t: t, nodes: append(append([]*Socket{ends.nodes[0]}, inner.nodes...), ends.nodes[1])}
	c.wire(testnet.Line(6))
	in := c.collect()
	ctx := ctxT(t, 30*time.Second)
	if _, ok := knownAddr(c.nodes[0], c.nodes[5].ID()); ok {
		t.Fatal("test set-up: node 0 already knows node 5's address; the route request would not be exercised")
	}
	if err := c.nodes[0].Whisper(ctx, c.nodes[5].ID(), []byte("secret")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return in.count(5, "secret") == 1 })
	c.waitQuiet()
	for i := 1; i < 5; i++ {
		if in.count(i, "secret") != 0 {
			t.Fatalf("node %d saw the whisper", i)
		}
	}
	st := c.nodes[0].Stats()
	if st.RouteRequests != 1 || st.RoutedWhispers != 1 || st.MeshRoutedWhispers != 0 || st.PendingRequests != 0 {
		t.Fatalf("route stats: %+v", st)
	}
	testnet.Eventually(t, 30*time.Second, func() bool {
		_, ok := c.nodes[0].Base().Conn(c.nodes[5].ID())
		return ok && c.nodes[0].Stats().RoutedDials+c.nodes[5].Stats().RoutedDials >= 1
	}, "a direct connection, dialled in the background, after routing")
}

// TestReplyAcrossHops: a reply to a broadcast reaches its origin several
// hops away, as a whisper.
func TestReplyAcrossHops(t *testing.T) {
	c := startCluster(t, 5)
	c.wire(testnet.Line(5))
	ctx := ctxT(t, 30*time.Second)
	if err := c.nodes[0].Send(ctx, []byte("question")); err != nil {
		t.Fatal(err)
	}
	m, err := c.nodes[4].Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Hops != 4 || m.Sender != c.nodes[0].ID() {
		t.Fatalf("got hops %d from %s; want 4 from node 0", m.Hops, m.Sender)
	}
	if err := m.Reply(ctx, []byte("answer")); err != nil {
		t.Fatal(err)
	}
	// Nodes 1..3 also got the question; drain node 0 until the answer.
	r, err := c.nodes[0].Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Packets[0]) != "answer" || r.Type != flags.Whisper || r.Sender != c.nodes[4].ID() {
		t.Fatalf("node 0 got %q type %s from %s", r.Packets[0], r.Type, r.Sender)
	}
}

// TestWhisperNoRoute: a node that is not in the mesh is not found, in time.
func TestWhisperNoRoute(t *testing.T) {
	c := startCluster(t, 3, WithRouteTimeout(300*time.Millisecond))
	c.wire(testnet.Line(3))
	start := time.Now()
	err := c.nodes[0].Whisper(ctxT(t, 10*time.Second), protocol.NewNodeID(), []byte("void"))
	if !errors.Is(err, ErrNoRoute) {
		t.Fatalf("Whisper to a stranger: %v, want ErrNoRoute", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("ErrNoRoute took %v; route timeout is 300ms", d)
	}
	if st := c.nodes[0].Stats(); st.RouteFailures != 1 || st.PendingRequests != 0 {
		t.Fatalf("route failures %d, pending %d; want 1, 0", st.RouteFailures, st.PendingRequests)
	}
	if err := c.nodes[0].Whisper(context.Background(), c.nodes[0].ID(), []byte("me")); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("Whisper to self: %v, want ErrNoRoute", err)
	}
}

// TestPendingRequestsBounded: beyond the bound, Whisper fails at once with
// ErrTooManyRequests instead of queueing without limit.
func TestPendingRequestsBounded(t *testing.T) {
	c := startCluster(t, 2, WithRouteTimeout(2*time.Second), WithMaxPendingRequests(2))
	c.wire(testnet.Line(2))
	ctx := ctxT(t, 10*time.Second)
	errs := make(chan error, 3)
	for range 2 {
		go func() { errs <- c.nodes[0].Whisper(ctx, protocol.NewNodeID(), []byte("x")) }()
	}
	testnet.Eventually(t, 5*time.Second, func() bool { return c.nodes[0].Stats().PendingRequests == 2 })
	err := c.nodes[0].Whisper(ctx, protocol.NewNodeID(), []byte("x"))
	if !errors.Is(err, ErrTooManyRequests) {
		t.Fatalf("third concurrent route: %v, want ErrTooManyRequests", err)
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrNoRoute) {
			t.Fatalf("bounded route: %v, want ErrNoRoute", err)
		}
	}
	testnet.Eventually(t, 5*time.Second, func() bool { return c.nodes[0].Stats().PendingRequests == 0 },
		"pending requests to expire")
}

func TestOptionsValidated(t *testing.T) {
	bad := []Option{
		WithMaxOutgoing(0), WithMaxPeers(-1), WithSeenCache(1, time.Second), WithSeenCache(1024, 0),
		WithClockSkew(-time.Second), WithHopLimit(0), WithHopLimit(300), WithMaxKnownPeers(0),
		WithMaxKnownPerSource(0), WithMaxKnownPerSource(-1), WithAbuseBan(-time.Second),
		WithPeerListBudget(0, time.Second), WithPeerListBudget(4, 0), WithRecordBudget(0, 256, 0),
		WithRecordBudget(64, maxPeersPerList-1, 0), WithRecordBudget(64, 256, -time.Second),
		WithMaxPendingRequests(0), WithRouteTimeout(0), WithDialTimeout(-1),
		WithMaintenance(0, time.Millisecond, time.Second), WithLogger(nil), WithTracer(nil),
		WithMaxOutgoing(10), // with the default max peers 32 this is fine; paired below
	}
	for i, opt := range bad[:len(bad)-1] {
		if _, err := NewSocket("127.0.0.1:0", opt); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("option %d: %v, want ErrInvalidOption", i, err)
		}
	}
	if _, err := NewSocket("127.0.0.1:0", WithMaxPeers(2), WithMaxOutgoing(3)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("max outgoing above max peers: %v, want ErrInvalidOption", err)
	}
	if _, err := NewSocket("127.0.0.1:0", WithMaintenance(time.Second, time.Second, time.Millisecond)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("back-off min above max: %v, want ErrInvalidOption", err)
	}
}

// TestTracer sees deliveries, relays and duplicates.
func TestTracer(t *testing.T) {
	kinds := make(chan TraceKind, 64)
	c := startCluster(t, 3, WithTracer(TracerFunc(func(e TraceEvent) {
		select {
		case kinds <- e.Kind:
		default:
		}
	})))
	c.wire(testnet.Ring(3))
	if err := c.nodes[0].Send(ctxT(t, 10*time.Second), []byte("t")); err != nil {
		t.Fatal(err)
	}
	seen := map[TraceKind]int{}
	testnet.Eventually(t, 30*time.Second, func() bool {
		for {
			select {
			case k := <-kinds:
				seen[k]++
				continue
			default:
			}
			return seen[TraceDeliver] == 2 && seen[TraceRelay] >= 1 && seen[TraceDuplicate] >= 1
		}
	}, "deliver, relay and duplicate traces (seen so far: %v)", seen)
}
