package base

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/meshsock/meshsock/protocol"
)

// PunchRetry is how long ConnectPunch waits before it dials again after a
// dial that failed at once (a reset or an unreachable host): the peer's
// half of the punch may not have opened its NAT yet.
const PunchRetry = 100 * time.Millisecond

// listenTCP opens the socket's listener, shareable with its dials under
// WithReusePort.
func listenTCP(cfg *config, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if cfg.reusePort {
		if err := shareListener(ln); err != nil {
			_ = ln.Close()
			return nil, err
		}
	}
	return ln, nil
}

// shareListener sets SO_REUSEADDR and SO_REUSEPORT on a listener that is
// bound already, so that the socket's dials may bind its port too. Set
// after the bind, they do not let another listener take the same port: a
// second socket on a port in use still fails to listen (ErrListen), and
// connections are never shared out between two listeners. A listener that
// is not a TCP socket is left alone.
func shareListener(ln net.Listener) error {
	if !reusePortSupported {
		return nil
	}
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	return ReusePortControl("tcp", ln.Addr().String(), rc)
}

// reuseLocal returns the listening port's address to punch from under
// WithReusePort (the listener's port, and its host unless unspecified), or
// nil.
func (s *Socket) reuseLocal() *net.TCPAddr {
	if !s.cfg.reusePort || !reusePortSupported || s.ln == nil {
		return nil
	}
	ta, ok := s.ln.Addr().(*net.TCPAddr)
	if !ok || ta.Port == 0 {
		return nil
	}
	local := &net.TCPAddr{Port: ta.Port}
	if !ta.IP.IsUnspecified() {
		local.IP = ta.IP
	}
	return local
}

// dialConn opens a TCP connection to addr through the dial function the
// options gave. An ordinary dial (from nil) leaves from a port the system
// picks: never from the listening port, since two nodes dialling each
// other at once from their listening ports would make one connection by a
// TCP simultaneous open, on which both would play the dialer. A punch dial
// leaves from the address given (the listening port, shared under
// WithReusePort), and never from another.
func (s *Socket) dialConn(ctx context.Context, addr string, from *net.TCPAddr) (net.Conn, error) {
	d := &net.Dialer{}
	if from != nil {
		d.LocalAddr, d.Control = from, ReusePortControl
	}
	nc, err := s.dialWith(ctx, d, addr)
	if err == nil && nc.LocalAddr().String() == nc.RemoteAddr().String() {
		// A dial from a port to that same address connects the socket to
		// itself (TCP simultaneous open with itself), not to a listener.
		_ = nc.Close()
		return nil, fmt.Errorf("%w: %s reached this node's own port", ErrSelfConnect, addr)
	}
	return nc, err
}

func (s *Socket) dialWith(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error) {
	switch {
	case s.cfg.netDial != nil:
		return s.cfg.netDial(ctx, d, "tcp", addr)
	case s.cfg.dial != nil:
		return s.cfg.dial(ctx, "tcp", addr)
	}
	return d.DialContext(ctx, "tcp", addr)
}

// addrPortOf returns a connection end's address in the form the punch
// table keys on (IPv4 addresses unmapped).
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
}

// ExpectPunch marks addr as the address a punch to node id will come
// from, until the function it returns is called: a connection the
// listener accepts from there meanwhile runs the handshake in the punch's
// roles (see ConnectPunch). Call it as soon as a punch is agreed, before
// waiting to dial: the peer's dial may come first. An address that is not
// an IP address and port is ignored.
func (s *Socket) ExpectPunch(addr string, id protocol.NodeID) (done func()) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return func() {}
	}
	return s.expectPunch(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), id)
}

// expectPunch registers ap for id; the function it returns removes the
// registration if it is still id's.
func (s *Socket) expectPunch(ap netip.AddrPort, id protocol.NodeID) func() {
	s.mu.Lock()
	s.punches[ap] = id
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.punches[ap] == id {
			delete(s.punches, ap)
		}
		s.mu.Unlock()
	}
}

// punchExpected returns the node a punch in flight expects from remote,
// if any.
func (s *Socket) punchExpected(remote net.Addr) (protocol.NodeID, bool) {
	ap, ok := addrPortOf(remote)
	if !ok {
		return protocol.NodeID{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.punches[ap]
	return id, ok
}

// ConnectPunch opens a link to node id, which is at addr as a neighbour
// both share sees it (its NAT's public address, and the port id listens
// on), by a simultaneous TCP open: this node and id dial each other at
// about the same time, each from its listening port (WithReusePort), so
// that each NAT, keeping that port in its mapping, lets the other's
// packets in as the answer to its own. It dials again every PunchRetry
// after a dial that fails at once, until a link to id exists or ctx ends.
//
// Both ends call connect(), so neither is the listener: the node with the
// smaller node ID plays the dialer of the handshake (TLS client, the
// dialer's Hello and Auth), the other the listener, and the handshake is
// otherwise the ordinary one (identity proof, network key, authorisation
// hook, limits). A connection from addr that the listener accepts while
// the punch is in flight (the peer's connect reached it first) runs the
// handshake in the same roles. The peer must prove it is id: another node
// at addr is refused with an error matching ErrIdentity. The link is then
// an ordinary one, Outbound at the end with the smaller ID.
//
// A node at addr that is not punching answers as a listener: to the
// punch's dialer that is the ordinary case, but the punch's listener then
// waits for the handshake timeout, and dials again.
//
// It fails with ErrTimeout (wrapping the last dial's or handshake's error)
// when ctx ends first, at once with ErrIdentity, ErrNotAuthorized or
// ErrProtocolMismatch, and with ErrSelfConnect for this node's own ID.
func (s *Socket) ConnectPunch(ctx context.Context, addr string, id protocol.NodeID) (*Conn, error) {
	if id == s.id {
		return nil, fmt.Errorf("%w: punch to this node's own ID", ErrSelfConnect)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Port() == 0 || !ap.Addr().IsValid() || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() {
		return nil, fmt.Errorf("%w: punch address %q is not an IP address and port", ErrUnreachable, addr)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	from := s.reuseLocal()
	if from == nil {
		return nil, fmt.Errorf("%w: a punch needs WithReusePort and a listening port", ErrInvalidOption)
	}
	if !s.lc.Hold() {
		return nil, ErrClosed
	}
	defer s.lc.Release()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.lc.Context(), cancel)
	defer stop()

	defer s.expectPunch(ap, id)()

	var last error
	for {
		if c, ok := s.Conn(id); ok {
			return c, nil
		}
		start := s.cfg.now()
		nc, err := s.dialConn(ctx, ap.String(), from)
		if err == nil {
			c, err := s.punchHandshake(ctx, nc, start, nil, id)
			if err == nil {
				return c, nil
			}
			if errors.Is(err, ErrIdentity) || errors.Is(err, ErrNotAuthorized) || errors.Is(err, ErrProtocolMismatch) {
				return nil, fmt.Errorf("meshsock: punch %s: %w", addr, err)
			}
			last = err
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			if c, ok := s.Conn(id); ok { // the peer's half won through the listener
				return c, nil
			}
			if last == nil {
				last = ctx.Err()
			}
			return nil, fmt.Errorf("%w: %w: punch %s: %w", ErrTimeout, ErrUnreachable, addr, last)
		case <-time.After(PunchRetry):
		}
	}
}

// punchHandshake runs the handshake on a punched connection (dialled, or
// accepted from the address a punch expects; pc is the accepted one's
// pending slot), in the roles the node IDs give, and registers and starts
// the connection.
func (s *Socket) punchHandshake(ctx context.Context, nc net.Conn, start time.Time, pc *pendingConn, want protocol.NodeID) (*Conn, error) {
	var kept *Conn
	var admit func(*Conn) error
	if s.id.Compare(want) > 0 { // the listener's part
		admit = func(c *Conn) (err error) {
			kept, err = s.register(c, "")
			return err
		}
	}
	c, err := s.handshakeAs(ctx, nc, start, pc, admit, want)
	if err != nil {
		_ = nc.Close()
		s.handshakeFailed(nc.RemoteAddr().String(), err)
		return nil, err
	}
	if admit == nil {
		if kept, err = s.register(c, ""); err != nil {
			_ = nc.Close()
			if errors.Is(err, ErrConnLimit) {
				s.ctr.handshakeFailures.Add(1)
			}
			return nil, err
		}
	}
	s.startConn(c, kept)
	return kept, nil
}
