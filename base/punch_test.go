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

// TestReusePortDialsShareablePorts: with WithReusePort an ordinary Connect
// leaves from a port the system picks, not the listening port (two nodes
// dialling each other at once from their listening ports would make one
// connection by a simultaneous open, with two dialers), while a punch dial
// can leave from the listening port the listener holds.
func TestReusePortDialsShareablePorts(t *testing.T) {
	if !reusePortSupported {
		t.Skip("skipping: no SO_REUSEPORT on this system")
	}
	a := stNew(t, WithReusePort(true))
	b := stNew(t, WithReusePort(true))
	ab, _ := stConnect(t, a, b)
	if got := portOf(ab.LocalAddr()); got == portOf(a.Addr()) {
		t.Fatalf("an ordinary dial left from the listening port %d", got)
	}
	c := stNew(t, WithReusePort(true))
	from := a.reuseLocal()
	nc, err := a.dialConn(stCtx(t), c.Addr().String(), from)
	if err != nil {
		t.Fatalf("a punch dial from the listening port: %v", err)
	}
	defer nc.Close()
	if got := portOf(nc.LocalAddr()); got != portOf(a.Addr()) {
		t.Fatalf("the punch dial left from port %d, want the listening port %d", got, portOf(a.Addr()))
	}
}

// TestReusePortSimultaneousConnect: two nodes with WithReusePort that
// Connect to each other at the same moment, again and again, always end
// up linked; dialling from the listening ports made some of these one
// connection by a simultaneous open, whose handshake failed with two TLS
// clients.
func TestReusePortSimultaneousConnect(t *testing.T) {
	if !reusePortSupported {
		t.Skip("skipping: no SO_REUSEPORT on this system")
	}
	for round := range 20 {
		a := stNew(t, WithReusePort(true))
		b := stNew(t, WithReusePort(true))
		var wg sync.WaitGroup
		errs := make([]error, 2)
		wg.Add(2)
		go func() { defer wg.Done(); _, errs[0] = a.Connect(stCtx(t), b.Addr().String()) }()
		go func() { defer wg.Done(); _, errs[1] = b.Connect(stCtx(t), a.Addr().String()) }()
		wg.Wait()
		for i, err := range errs {
			if err != nil && !errors.Is(err, ErrDuplicate) {
				t.Fatalf("round %d: Connect %d: %v", round, i, err)
			}
		}
		if _, ok := a.Conn(b.ID()); !ok {
			t.Fatalf("round %d: not linked", round)
		}
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
	// A listener given with WithListener is shared too: a punch dial can
	// leave from its port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := stNewAt(t, "", WithListener(ln), WithReusePort(true))
	from := b.reuseLocal()
	if from == nil || from.Port != portOf(ln.Addr()) {
		t.Fatalf("punches would leave from %v, want the given listener's port %d", from, portOf(ln.Addr()))
	}
	nc, err := b.dialConn(stCtx(t), a.Addr().String(), from)
	if err != nil {
		t.Fatalf("a dial from the given listener's port: %v", err)
	}
	defer nc.Close()
	if portOf(nc.LocalAddr()) != portOf(ln.Addr()) {
		t.Fatalf("the dial left from %v, want the given listener's port %d", nc.LocalAddr(), portOf(ln.Addr()))
	}
}
