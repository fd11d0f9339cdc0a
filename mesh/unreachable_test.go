package mesh

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// A node behind a NAT, or one that does not listen, cannot be dialled;
// one whose address swallows connections stalls every dial to it. These
// tests reach such nodes three hops away and check that requests, calls
// and replies neither wait for a dial nor for the route timeout: the
// route timeout, dial timeout and handshake timeout are far longer than
// the context each test gives its calls, so only an answer that goes
// through the mesh at once arrives in time.

// sink returns an address that accepts TCP connections and never speaks:
// a dial to it stalls until the dialler gives up (the kernel completes the
// TCP handshake from the listen backlog; nobody answers the preamble).
func sink(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l.Addr().String()
}

// stallingOpts make every dial and search last far longer than the
// tests' contexts.
func stallingOpts() []Option {
	return []Option{
		WithRouteTimeout(time.Minute), WithDialTimeout(time.Minute),
		WithBaseOptions(base.WithHandshakeTimeout(time.Minute)),
	}
}

// unreachableLine builds 0-1-2-3, where node 0 advertises an address that
// swallows connections (it sits behind a NAT that drops what it did not
// ask for), nodes 1 and 2 advertise one where nobody listens (so that peer
// exchange cannot shortcut the line), and node 3 does not listen at all:
// it dialled node 2. Nodes 0 and 3 run discovery, so each may try to dial
// the other; nodes 1 and 2 keep the line as it is.
func unreachableLine(t *testing.T, opts ...Option) (c *cluster, far *Socket) {
	t.Helper()
	head := startCluster(t, 1, append(append(stallingOpts(), WithDiscovery(true), WithAdvertiseAddr(sink(t))), opts...)...)
	inner := startCluster(t, 2, append(append(stallingOpts(), WithAdvertiseAddr("127.0.0.1:1")), opts...)...)
	c = &cluster{t: t, nodes: []*Socket{head.nodes[0], inner.nodes[0], inner.nodes[1]}}
	c.wire(testnet.Line(3))
	far, err := NewSocket("", append(append(stallingOpts(), WithDiscovery(true), WithMembership(false),
		WithLogger(testnet.Logger(t).With("i", 3))), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = far.Close(context.Background()) })
	ctx := ctxT(t, 10*time.Second)
	if err := far.Connect(ctx, c.nodes[2].Addr().String()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return len(c.nodes[2].Peers()) == 2 },
		"node 2 to see the dial-only node")
	return c, far
}

// noDirectLink fails the test if a and b are linked.
func noDirectLink(t *testing.T, a, b *Socket) {
	t.Helper()
	if _, ok := a.Base().Conn(b.ID()); ok {
		t.Fatalf("%s has a direct link to %s", a.ID().Short(), b.ID().Short())
	}
	if _, ok := b.Base().Conn(a.ID()); ok {
		t.Fatalf("%s has a direct link to %s", b.ID().Short(), a.ID().Short())
	}
}

// echo answers every request with its packets.
func echo(s *Socket) {
	s.RegisterHandler(base.HandlerFunc(func(m *Message) bool {
		_ = m.Reply(context.Background(), m.Packets...)
		return true
	}))
}

// TestRequestUndialableThreeHops: a node that does not listen, three hops
// away, answers a Request without a direct link, well within a context
// much shorter than the route and dial timeouts; and it asks the node
// that cannot be dialled back, likewise.
func TestRequestUndialableThreeHops(t *testing.T) {
	c, far := unreachableLine(t)
	near := c.nodes[0]
	echo(far)
	echo(near)
	for range 3 { // the first searches; the others know the way
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		m, err := near.Request(ctx, far.ID(), []byte("ping"))
		cancel()
		if err != nil {
			t.Fatalf("Request to the dial-only node: %v", err)
		}
		if m.Sender != far.ID() || string(m.Packets[0]) != "ping" {
			t.Fatalf("answer %q from %s", m.Packets, m.Sender.Short())
		}
		ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
		m, err = far.Request(ctx, near.ID(), []byte("pong"))
		cancel()
		if err != nil {
			t.Fatalf("Request from the dial-only node: %v", err)
		}
		if m.Sender != near.ID() || string(m.Packets[0]) != "pong" {
			t.Fatalf("answer %q from %s", m.Packets, m.Sender.Short())
		}
		noDirectLink(t, near, far)
	}
}

// TestCallUndialableThreeHops: likewise for Call, both ways.
func TestCallUndialableThreeHops(t *testing.T) {
	c, far := unreachableLine(t)
	near := c.nodes[0]
	for _, s := range []*Socket{near, far} {
		if err := s.Handle("add", addHandler); err != nil {
			t.Fatal(err)
		}
	}
	for i, pair := range [][2]*Socket{{near, far}, {far, near}, {near, far}} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		var sum int
		err := pair[0].Call(ctx, pair[1].ID(), "add", addArgs{i, 3}, &sum)
		cancel()
		if err != nil || sum != i+3 {
			t.Fatalf("call %d: %d, %v", i, sum, err)
		}
	}
	noDirectLink(t, near, far)
}

// TestReplyUndialableThreeHops: a reply to a node that cannot be dialled
// (to a broadcast of the node that swallows connections, and to a whisper
// of the dial-only node) arrives at once, without a direct link.
func TestReplyUndialableThreeHops(t *testing.T) {
	c, far := unreachableLine(t)
	near := c.nodes[0]
	for _, tc := range []struct {
		name     string
		from, to *Socket
		send     func(ctx context.Context) error
	}{
		{"reply to a broadcast", near, far, func(ctx context.Context) error { return near.Send(ctx, []byte("hello")) }},
		{"reply to a whisper", far, near, func(ctx context.Context) error { return far.Whisper(ctx, near.ID(), []byte("hello")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if err := tc.send(ctx); err != nil {
				t.Fatal(err)
			}
			m := recvFrom(ctx, t, tc.to, tc.from.ID())
			if err := m.Reply(ctx, []byte("answer")); err != nil {
				t.Fatal(err)
			}
			r := recvFrom(ctx, t, tc.from, tc.to.ID())
			if string(r.Packets[0]) != "answer" {
				t.Fatalf("got %q", r.Packets)
			}
			noDirectLink(t, near, far)
		})
	}
}

// recvFrom returns the next message s receives from sender, skipping
// others (the relays' copies of broadcasts are not for s).
func recvFrom(ctx context.Context, t *testing.T, s *Socket, sender protocol.NodeID) *Message {
	t.Helper()
	for {
		m, err := s.Recv(ctx)
		if err != nil {
			t.Fatalf("waiting for a message from %s: %v", sender.Short(), err)
		}
		if m.Sender == sender {
			return m
		}
	}
}
