package base_test

import (
	"net"
	"slices"
	"testing"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testdns"
	"github.com/meshsock/meshsock/internal/testnet"
)

// lyingListener reports every accepted connection as coming from claim,
// so that the node behind it tells each peer that it sees it at claim: a
// lying peer in a few lines.
type lyingListener struct {
	net.Listener
	claim *net.TCPAddr
}

func (l lyingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return lyingConn{c, l.claim}, nil
}

type lyingConn struct {
	net.Conn
	claim *net.TCPAddr
}

func (c lyingConn) RemoteAddr() net.Addr { return c.claim }

// obLiar starts a node on ip that tells whoever dials it that it sees
// them at claim.
func obLiar(t *testing.T, ip, claim string) *base.Socket {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := net.ResolveTCPAddr("tcp", claim)
	if err != nil {
		t.Fatal(err)
	}
	return testnet.NewBase(t, "", base.WithListener(lyingListener{ln, ca}))
}

// TestObservedAddrsNeedAgreement: a node listening on an unspecified
// address learns the address its peers see it at, with its listen port,
// only when peers from two distinct sources agree; one lying peer, or
// several from one source, cannot make it take an address.
func TestObservedAddrsNeedAgreement(t *testing.T) {
	ftLeakCheck(t)
	testdns.NeedLoopbacks(t, "127.0.0.2", "127.0.0.3", "127.0.0.5", "127.0.0.6")
	n := testnet.NewBase(t, "0.0.0.0:0")
	_, port, _ := net.SplitHostPort(n.Addr().String())
	ctx := ftCtx(t)
	dial := func(s *base.Socket) *base.Conn {
		t.Helper()
		c, err := n.Connect(ctx, s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Two liars on one address (one source) agree on a made-up address.
	for range 2 {
		c := dial(obLiar(t, "127.0.0.5", "203.0.113.9:1234"))
		if got := c.Observed(); got != "203.0.113.9:1234" {
			t.Fatalf("Observed() = %q; want what the liar said", got)
		}
	}
	if got := n.ObservedAddrs(); len(got) != 0 {
		t.Fatalf("ObservedAddrs() = %v after peers from one source; want none", got)
	}
	// One honest peer: its word alone is not enough either.
	honest1 := testnet.NewBase(t, "127.0.0.2:0")
	c := dial(honest1)
	host, _, err := net.SplitHostPort(c.Observed())
	if err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
		t.Fatalf("Observed() = %q; want this node's loopback address and port", c.Observed())
	}
	if got := n.ObservedAddrs(); len(got) != 0 {
		t.Fatalf("ObservedAddrs() = %v after one honest peer; want none", got)
	}
	// A second honest peer, from another source, agrees.
	dial(testnet.NewBase(t, "127.0.0.3:0"))
	want := net.JoinHostPort(host, port)
	if got := n.ObservedAddrs(); !slices.Equal(got, []string{want}) {
		t.Fatalf("ObservedAddrs() = %v; want [%s] (the observed IP with the listen port)", got, want)
	}
	// The learnt address stays when links go: losing a peer is no news.
	if err := honest1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, ftWait, func() bool { _, ok := n.Conn(honest1.ID()); return !ok }, "link to the closed peer")
	if got := n.ObservedAddrs(); !slices.Equal(got, []string{want}) {
		t.Fatalf("ObservedAddrs() = %v after a peer left; want [%s] kept", got, want)
	}
	// And it is an address others can dial.
	third := testnet.NewBase(t, "")
	if c, err := third.Connect(ctx, want); err != nil || c.ID() != n.ID() {
		t.Fatalf("dialling the learnt address %s: %v", want, err)
	}
}

// TestObservedFromTwoLiars: the rule is a quorum of sources, not truth:
// two peers from distinct sources that tell the same lie are believed, and
// a node that listens on a specific address combines nothing with its
// listen port.
func TestObservedFromTwoLiars(t *testing.T) {
	ftLeakCheck(t)
	testdns.NeedLoopbacks(t, "127.0.0.2", "127.0.0.3", "127.0.0.5", "127.0.0.6")
	ctx := ftCtx(t)
	wild := testnet.NewBase(t, "0.0.0.0:0")
	fixed := testnet.NewBase(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(wild.Addr().String())
	for _, ip := range []string{"127.0.0.5", "127.0.0.6"} {
		liar := obLiar(t, ip, "203.0.113.9:1234")
		for _, n := range []*base.Socket{wild, fixed} {
			if _, err := n.Connect(ctx, liar.Addr().String()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, want := wild.ObservedAddrs(), net.JoinHostPort("203.0.113.9", port); !slices.Equal(got, []string{want}) {
		t.Errorf("ObservedAddrs() = %v; want [%s]", got, want)
	}
	if got := fixed.ObservedAddrs(); len(got) != 0 {
		t.Errorf("a node listening on 127.0.0.1 learnt %v from links it dialled; want nothing", got)
	}
	off := testnet.NewBase(t, "0.0.0.0:0", base.WithObservedQuorum(0))
	for _, p := range wild.Peers() {
		if _, err := off.Connect(ctx, p.RemoteAddr); err != nil {
			t.Fatal(err)
		}
	}
	if got := off.ObservedAddrs(); got != nil {
		t.Errorf("with learning off, ObservedAddrs() = %v", got)
	}
}

// TestObservedInbound: on a link the peer dialled, the peer tells the
// address it dialled; peers that dialled this node from two sources at one
// address make it an agreed address as it is.
func TestObservedInbound(t *testing.T) {
	ftLeakCheck(t)
	testdns.NeedLoopbacks(t, "127.0.0.2", "127.0.0.3", "127.0.0.5", "127.0.0.6")
	ctx := ftCtx(t)
	n := testnet.NewBase(t, "0.0.0.0:0")
	_, port, _ := net.SplitHostPort(n.Addr().String())
	target := net.JoinHostPort("127.0.0.9", port)
	for _, src := range []string{"127.0.0.2", "127.0.0.3"} {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		peer := testnet.NewBase(t, "", base.WithDialer(d.DialContext))
		c, err := peer.Connect(ctx, target)
		if err != nil {
			t.Fatal(err)
		}
		// The dialer learns nothing from the listener's word alone.
		if c.Observed() == "" {
			t.Error("the listener did not say where it sees the dialer")
		}
	}
	testnet.Eventually(t, ftWait, func() bool { return len(n.Conns()) == 2 }, "both links registered")
	for _, c := range n.Conns() {
		if c.Observed() != target {
			t.Errorf("Observed() = %q on a link the peer dialled; want the address it dialled, %s", c.Observed(), target)
		}
	}
	if got := n.ObservedAddrs(); !slices.Equal(got, []string{target}) {
		t.Errorf("ObservedAddrs() = %v; want [%s]", got, target)
	}
}
