package base

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/protocol"
)

func portOf(a net.Addr) int { return a.(*net.TCPAddr).Port }

// TestReusePortDialsFromListeningPort: with WithReusePort a Connect leaves
// from the listening port (what a NAT maps for the listener is what the
// peer sees); a second link between the same two ports is impossible, and
// a dial whose tuple is taken falls back to an ephemeral port.
func TestReusePortDialsFromListeningPort(t *testing.T) {
	if !reusePortSupported {
		t.Skip("skipping: no SO_REUSEPORT on this system")
	}
	a := stNew(t, WithReusePort(true))
	b := stNew(t, WithReusePort(true))
	ab, ba := stConnect(t, a, b)
	if got, want := portOf(ab.LocalAddr()), portOf(a.Addr()); got != want {
		t.Fatalf("the dial left from port %d, want the listening port %d", got, want)
	}
	if got, want := portOf(ba.RemoteAddr()), portOf(a.Addr()); got != want {
		t.Fatalf("b sees a at port %d, want a's listening port %d", got, want)
	}
	// A third node without the option dials from an ephemeral port.
	c := stNew(t)
	cb, _ := stConnect(t, c, b)
	if portOf(cb.LocalAddr()) == portOf(c.Addr()) {
		t.Fatal("a node without WithReusePort dialled from its listening port")
	}
	// The same tuple again (b's listening port to a's) is taken by the
	// link: b's dial to a falls back and still reaches a (the link to a
	// exists, so Connect returns it; dial a fresh address string to force
	// a dial).
	ctx := stCtx(t)
	nc, err := b.dialConn(ctx, a.Addr().String(), false)
	if err != nil {
		t.Fatalf("dial with a taken tuple: %v", err)
	}
	defer nc.Close()
	if portOf(nc.LocalAddr()) == portOf(b.Addr()) {
		t.Fatal("a second connection shares the four-tuple of the first")
	}
	if _, err := b.dialConn(ctx, a.Addr().String(), true); err == nil {
		t.Fatal("a punch dial fell back to an ephemeral port")
	}
}

// TestConnectPunchBothWays: two nodes that call ConnectPunch on each
// other at once end up with one ordinary link, whatever the ID order, the
// same one at both ends. On loopback the listeners are open, so one side's
// connect usually reaches the other's listener: the accepted connection
// must run in the punch's roles.
func TestConnectPunchBothWays(t *testing.T) {
	if !reusePortSupported {
		t.Skip("skipping: no SO_REUSEPORT on this system")
	}
	for i := range 3 {
		a := stNew(t, WithReusePort(true))
		b := stNew(t, WithReusePort(true))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var wg sync.WaitGroup
		var ca, cb *Conn
		var ea, eb error
		wg.Add(2)
		go func() { defer wg.Done(); ca, ea = a.ConnectPunch(ctx, b.Addr().String(), b.ID()) }()
		go func() { defer wg.Done(); cb, eb = b.ConnectPunch(ctx, a.Addr().String(), a.ID()) }()
		wg.Wait()
		cancel()
		if ea != nil || eb != nil {
			t.Fatalf("round %d: punch: %v / %v", i, ea, eb)
		}
		if ca.ID() != b.ID() || cb.ID() != a.ID() {
			t.Fatalf("round %d: linked to the wrong nodes", i)
		}
		if ca.Peer().Outbound == cb.Peer().Outbound {
			t.Fatalf("round %d: both ends say Outbound=%v; the smaller ID must be the dialer", i, ca.Peer().Outbound)
		}
		if small := a.ID().Compare(b.ID()) < 0; ca.Peer().Outbound != small {
			t.Fatalf("round %d: a (smaller: %v) has Outbound=%v", i, small, ca.Peer().Outbound)
		}
		// The link carries messages both ways.
		if err := ca.Send(stCtx(t), []byte("ab")); err != nil {
			t.Fatal(err)
		}
		if m := stRecv(t, b); stPacket(m) != "ab" {
			t.Fatalf("b got %q", stPacket(m))
		}
		if err := cb.Send(stCtx(t), []byte("ba")); err != nil {
			t.Fatal(err)
		}
		if m := stRecv(t, a); stPacket(m) != "ba" {
			t.Fatalf("a got %q", stPacket(m))
		}
		stClose(t, a)
		stClose(t, b)
	}
}

// TestConnectPunchWrongNode: a punch reaches whoever is at the address;
// a node that is not the one wanted is refused, as an identity failure,
// at once when this node plays the dialer.
func TestConnectPunchWrongNode(t *testing.T) {
	a := stNew(t, WithReusePort(true))
	other := stNew(t, WithReusePort(true))
	// a must play the dialer (smaller ID): a wrong node that does not
	// punch answers as a listener, and two listeners would wait for each
	// other until the handshake timeout.
	want := protocol.NodeIDFromKey(GenerateKey().Public().(ed25519.PublicKey))
	for a.ID().Compare(want) > 0 {
		want = protocol.NodeIDFromKey(GenerateKey().Public().(ed25519.PublicKey))
	}
	start := time.Now()
	_, err := a.ConnectPunch(stCtx(t), other.Addr().String(), want)
	if !errors.Is(err, ErrIdentity) {
		t.Fatalf("punch to the wrong node: %v, want ErrIdentity", err)
	}
	if time.Since(start) > stTimeout/2 {
		t.Fatal("the refusal waited for the context")
	}
	if len(a.Conns()) != 0 || len(other.Conns()) != 0 {
		t.Fatal("a link was kept with the wrong node")
	}
	// Bad addresses and this node's own ID fail before dialling.
	for _, addr := range []string{"", "example.com:1", "0.0.0.0:5", "127.0.0.1:0", "224.0.0.1:80"} {
		if _, err := a.ConnectPunch(stCtx(t), addr, want); !errors.Is(err, ErrUnreachable) {
			t.Errorf("punch to %q: %v, want ErrUnreachable", addr, err)
		}
	}
	if _, err := a.ConnectPunch(stCtx(t), other.Addr().String(), a.ID()); !errors.Is(err, ErrSelfConnect) {
		t.Errorf("punch to self: %v", err)
	}
}

// TestConnectPunchTimesOut: nobody answers at the address; the punch
// retries until its context ends and says so.
func TestConnectPunchTimesOut(t *testing.T) {
	a := stNew(t, WithReusePort(true))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a closed port: every dial is refused at once
	ctx, cancel := context.WithTimeout(context.Background(), 3*PunchRetry)
	defer cancel()
	want := protocol.NodeIDFromKey(GenerateKey().Public().(ed25519.PublicKey))
	if _, err := a.ConnectPunch(ctx, addr, want); !errors.Is(err, ErrTimeout) || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("punch to a closed port: %v", err)
	}
	a.mu.Lock()
	n := len(a.punches)
	a.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d punch expectations left behind", n)
	}
}

// TestReusePortSelfConnect: under WithReusePort a dial to this node's own
// address by another name (localhost) leaves from the listening port to
// that same port, and TCP connects the socket to itself; Connect must say
// ErrSelfConnect, as it does without the option (it failed in the TLS
// handshake, two clients on one socket, before dialConn checked).
func TestReusePortSelfConnect(t *testing.T) {
	if !reusePortSupported {
		t.Skip("skipping: no SO_REUSEPORT on this system")
	}
	s := stNew(t, WithReusePort(true))
	addr := net.JoinHostPort("localhost", fmt.Sprint(portOf(s.Addr())))
	if _, err := s.Connect(stCtx(t), addr); !errors.Is(err, ErrSelfConnect) {
		t.Fatalf("Connect(%s) to self: %v, want ErrSelfConnect", addr, err)
	}
}

// TestReusePortListenerStaysExclusive: sharing the listening port with
// dials must not let a second listener take the port (connections would
// be shared out between two nodes): a second socket on a port in use fails
// with ErrListen, with or without the option on either side.
func TestReusePortListenerStaysExclusive(t *testing.T) {
	a := stNew(t, WithReusePort(true))
	for _, on := range []bool{true, false} {
		s, err := NewSocket(a.Addr().String(), WithReusePort(on), WithLogger(stLogger()))
		if err == nil {
			stClose(t, s)
			t.Fatalf("a second socket (reuse %v) listens on %s, in use", on, a.Addr())
		}
		if !errors.Is(err, ErrListen) {
			t.Fatalf("second listener: %v, want ErrListen", err)
		}
	}
	// A listener given with WithListener is shared too: dials leave from
	// its port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := stNewAt(t, "", WithListener(ln), WithReusePort(true))
	ba, _ := stConnect(t, b, a)
	if portOf(ba.LocalAddr()) != portOf(ln.Addr()) {
		t.Fatalf("the dial left from %v, want the given listener's port %d", ba.LocalAddr(), portOf(ln.Addr()))
	}
}
