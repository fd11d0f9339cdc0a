package base

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// handshake runs the Hello/Verdict exchange of docs/protocol.md on a fresh
// TCP connection. Both sides send their Hello at once. The dialer answers
// first; the accepting side answers only after reading the dialer's verdict
// and admitting the connection (admit registers it), so that when the
// dialer's handshake returns, the link is usable from both ends. The
// returned Conn is not started.
//
// admit is nil for the dialer. For the acceptor it returns the error that
// refuses the connection (ErrConnLimit, ErrClosed), which is sent to the
// dialer as a verdict. pc is the acceptor's pending-handshake slot (nil for
// the dialer): until the peer's Hello is read, a newcomer from a less
// represented source may take it (admission.go), and the handshake then
// refuses its peer with a connection-limit verdict.
//
// start is this node's clock (cfg.now) when the dialer began dialling or
// the acceptor accepted the connection; the clock check needs a time no
// later than the moment the peer built its Hello (see clockOffset).
func (s *Socket) handshake(ctx context.Context, nc net.Conn, start time.Time, pc *pendingConn, admit func(*Conn) error) (*Conn, error) {
	cfg := &s.cfg
	outbound := admit == nil
	deadline := time.Now().Add(cfg.handshakeTimeout)
	ctxDeadline := false // the caller's deadline comes first
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, ctxDeadline = d, true
	}
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	// callerTimeout is the error for a handshake cut short by ctx (the
	// caller's, or the socket's when it closes), nil if it was not.
	callerTimeout := func() error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: handshake: %w", ErrTimeout, err)
		}
		if ctxDeadline {
			return fmt.Errorf("%w: handshake: %w", ErrTimeout, context.DeadlineExceeded)
		}
		return nil
	}
	wrap := func(err error) error {
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if cerr := callerTimeout(); cerr != nil {
				return cerr
			}
			return fmt.Errorf("%w: handshake did not complete within %v", ErrTimeout, cfg.handshakeTimeout)
		case peerClosed(err):
			return fmt.Errorf("%w: handshake: the peer closed the connection: %w", ErrClosed, err)
		}
		return fmt.Errorf("handshake: %w", err)
	}
	// beforeHello wraps a failure before the peer's first frame was read.
	// A peer that closes the connection, or sends nothing within the
	// handshake timeout, without a Hello does not speak meshsock; one that
	// was cut short by ctx may, and only ErrTimeout is known.
	beforeHello := func(err error) error {
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if cerr := callerTimeout(); cerr != nil {
				return cerr
			}
			return fmt.Errorf("%w: handshake: no hello from the peer within %v: %w",
				ErrTimeout, cfg.handshakeTimeout, ErrNotMeshsock)
		case peerClosed(err):
			return fmt.Errorf("%w: handshake: the peer closed the connection before its hello (%w): %w",
				ErrNotMeshsock, ErrClosed, err)
		}
		return fmt.Errorf("%w: handshake: first frame: %w", ErrNotMeshsock, err)
	}

	nonce := rand.Uint64()
	hello, err := protocol.MarshalHello(&protocol.Hello{
		Version:    protocol.Version,
		Protocol:   s.protoID,
		NodeID:     s.id,
		ListenAddr: s.advertised,
		Accept:     s.compressionList(),
		Meta:       cfg.meta,
		Nonce:      nonce,
		Time:       cfg.now().UnixNano(),
	})
	if err != nil {
		return nil, wrap(err)
	}
	if err := protocol.WriteFrame(nc, flags.None, hello); err != nil {
		return nil, beforeHello(err)
	}

	// The peer's first frame is judged strictly: anything but a Hello
	// frame (too long for the handshake, a codec byte other than none, a
	// body that does not decode as a Hello) is not meshsock, at once.
	br := bufio.NewReaderSize(nc, cfg.readBuffer)
	fr := protocol.NewFrameReader(br, protocol.MaxHandshakeSize)
	// A slot displaced before the deadline above was set lost the past
	// read deadline that ends the wait: check once more.
	if pc != nil && s.pend.isDisplaced(pc) {
		return nil, s.refuseDisplaced(nc)
	}
	codec, body, err := fr.ReadFrame(nil)
	if err != nil {
		if pc != nil && s.pend.isDisplaced(pc) {
			return nil, s.refuseDisplaced(nc)
		}
		return nil, beforeHello(err)
	}
	if pc != nil && !s.pend.helloRead(pc) {
		return nil, s.refuseDisplaced(nc)
	}
	received := cfg.now()
	if codec != flags.None {
		return nil, fmt.Errorf("%w: handshake: first frame has codec byte 0x%02x, not 0x00", ErrNotMeshsock, byte(codec))
	}
	peer, err := protocol.UnmarshalHello(body)
	if err != nil {
		if outbound {
			// A listener that refuses before its handshake starts (at its
			// pending-handshake limit) sends a verdict without a Hello.
			if v, verr := protocol.UnmarshalVerdict(body); verr == nil && v.Code != protocol.Accept {
				return nil, rejectError(v.Code, v.Reason)
			}
		}
		if errors.Is(err, protocol.ErrMalformed) {
			// It starts like a Hello: a broken meshsock peer, which is
			// told why before the connection closes.
			_ = s.sendVerdict(nc, protocol.Verdict{Code: protocol.RejectBadHello, Reason: "bad hello"})
		}
		return nil, fmt.Errorf("%w: handshake: first frame: %w", ErrNotMeshsock, err)
	}
	verdict := s.judge(peer, s.clockOffset(peer.Time, start, received, outbound), nc.RemoteAddr(), outbound)
	// readVerdict reads the peer's verdict, even when refusing, so that
	// neither side closes with unread data (which would reset the
	// connection and lose the reason).
	readVerdict := func() error {
		_, body, err := fr.ReadFrame(nil)
		if err != nil {
			return wrap(err)
		}
		theirs, err := protocol.UnmarshalVerdict(body)
		if err != nil {
			return wrap(err)
		}
		if theirs.Code != protocol.Accept {
			return rejectError(theirs.Code, theirs.Reason)
		}
		return nil
	}
	if outbound || verdict.Code != protocol.Accept {
		if err := s.sendVerdict(nc, verdict); err != nil && verdict.Code == protocol.Accept {
			return nil, wrap(err)
		}
		rerr := readVerdict()
		if verdict.Code != protocol.Accept {
			return nil, rejectError(verdict.Code, verdict.Reason)
		}
		if rerr != nil {
			return nil, rerr
		}
	} else if err := readVerdict(); err != nil {
		// The dialer refused us; it still waits for our verdict.
		_ = s.sendVerdict(nc, verdict)
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: handshake: %w", ErrTimeout, ctx.Err())
	}

	info := PeerInfo{
		ID:         peer.NodeID,
		Addr:       resolveAdvertised(peer.ListenAddr, nc.RemoteAddr()),
		RemoteAddr: nc.RemoteAddr().String(),
		Outbound:   outbound,
		Meta:       peer.Meta,
		Accept:     peer.Accept,
		Since:      time.Now(),
	}
	c := newConn(s, nc, br, info)
	c.dialNonce = peer.Nonce
	if outbound {
		c.dialNonce = nonce
	} else {
		c.src, c.srcCounted = s.sourceOf(nc.RemoteAddr())
	}
	c.setPeerAccept(peer.Accept)
	if !outbound {
		if err := admit(c); err != nil {
			_ = s.sendVerdict(nc, refusal(err))
			return nil, err
		}
		// Admitted: from here the connection is registered, and the caller
		// starts it whatever happens; a failed write ends it at once.
		_ = s.sendVerdict(nc, verdict)
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

// Refusals of connections over a pending-handshake limit (refuseBusy):
// at most maxRefusing at a time, each for at most refuseLinger.
const (
	maxRefusing  = 16
	refuseLinger = time.Second
)

// refuseBusy answers a connection that arrived over a pending-handshake
// limit (in total or for its source; why says which) with a
// connection-limit verdict and no Hello (docs/protocol.md §9.1), so that
// the dialer learns why, then closes it. Before closing it half-closes and
// reads what the dialer sent (its Hello) until the dialer closes, for at
// most refuseLinger or the handshake timeout: closing with unread data
// would reset the connection, which can destroy the verdict before the
// dialer reads it.
func (s *Socket) refuseBusy(nc net.Conn, why string) {
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(min(s.cfg.handshakeTimeout, refuseLinger)))
	stop := context.AfterFunc(s.lc.Context(), func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	v := protocol.Verdict{Code: protocol.RejectLimit, Reason: why}
	if err := s.sendVerdict(nc, v); err != nil {
		return
	}
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(nc, 2*protocol.MaxHandshakeSize))
}

// refuseDisplaced ends a handshake whose pending slot went to a newcomer
// from a less represented source before the peer's Hello was read: it
// refuses the peer with a connection-limit verdict (after this node's
// Hello, as any refusal) and returns the error for this side. The write
// deadline is still the handshake's.
func (s *Socket) refuseDisplaced(nc net.Conn) error {
	const why = "displaced: too many handshakes pending, and the most from this source"
	_ = s.sendVerdict(nc, protocol.Verdict{Code: protocol.RejectLimit, Reason: why})
	return fmt.Errorf("%w: %s", ErrConnLimit, why)
}

// peerClosed reports whether a read or write failed because the peer
// closed or reset the connection.
func peerClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, protocol.ErrTruncated) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}

// refusal is the verdict that tells a dialer why admission failed.
func refusal(err error) protocol.Verdict {
	code := protocol.RejectUnspecified
	switch {
	case errors.Is(err, ErrConnLimit):
		code = protocol.RejectLimit
	case errors.Is(err, ErrClosed):
		code = protocol.RejectShutdown
	}
	return protocol.Verdict{Code: code, Reason: err.Error()}
}

func (s *Socket) sendVerdict(nc net.Conn, v protocol.Verdict) error {
	b, err := protocol.MarshalVerdict(v)
	if err != nil {
		return err
	}
	return protocol.WriteFrame(nc, flags.None, b)
}

// offsetRange is what the handshake knows of a peer's clock offset (its
// clock minus this node's): it lies between lo and hi.
type offsetRange struct{ lo, hi time.Duration }

// clockOffset bounds the offset of a peer whose Hello says peerTime and
// was read at received. The peer built its Hello after t0 and before
// received, so the offset lies in [peerTime - received, peerTime - t0]: the
// width is the delay that cannot be told apart from an offset.
//
// The dialer's t0 is when it began dialling: the listener builds its Hello
// after accepting. The acceptor's start is when it accepted, but the
// dialer may have built its Hello while the connection waited to be
// accepted (on loopback, often a few microseconds earlier); a dialer whose
// Hello is older than a handshake timeout has given up, so the acceptor's
// t0 is start minus its handshake timeout. The dialer's interval is thus
// the tight one, and with equal allowances its check decides.
func (s *Socket) clockOffset(peerTime int64, start, received time.Time, outbound bool) offsetRange {
	t0 := start
	if !outbound {
		t0 = start.Add(-s.cfg.handshakeTimeout)
	}
	// time.Time.Sub saturates, so no peerTime can overflow.
	stamp := time.Unix(0, peerTime)
	return offsetRange{lo: stamp.Sub(received), hi: stamp.Sub(t0)}
}

// clockVerdict refuses a peer whose clock offset is certainly beyond the
// allowance, that is, whose whole offset range lies outside it.
func (s *Socket) clockVerdict(off offsetRange, outbound bool) (protocol.Verdict, bool) {
	allow := s.cfg.clockSkew
	var dir string
	var least time.Duration
	switch {
	case off.lo > allow:
		dir, least = "ahead of", off.lo
	case off.hi < -allow:
		dir, least = "behind", -off.hi
	default:
		return protocol.Verdict{}, false
	}
	peer, self := "listener", "dialer"
	if !outbound {
		peer, self = self, peer
	}
	return protocol.Verdict{Code: protocol.RejectClockSkew, Reason: fmt.Sprintf(
		"the %s's clock is at least %v %s the %s's (offset between %s and %s, allowance %v)",
		peer, least.Round(time.Millisecond), dir, self, signed(off.lo), signed(off.hi), allow)}, true
}

// signed formats d with its sign, to the millisecond.
func signed(d time.Duration) string {
	d = d.Round(time.Millisecond)
	if d < 0 {
		return d.String()
	}
	return "+" + d.String()
}

// judge decides whether to accept a peer's Hello, given what the handshake
// measured of the peer's clock offset and the connection's remote address.
func (s *Socket) judge(h *protocol.Hello, off offsetRange, remote net.Addr, outbound bool) protocol.Verdict {
	switch {
	case h.Version != protocol.Version:
		return protocol.Verdict{Code: protocol.RejectProtocol,
			Reason: fmt.Sprintf("wire version %d, want %d", h.Version, protocol.Version)}
	case h.Protocol != s.protoID:
		return protocol.Verdict{Code: protocol.RejectProtocol,
			Reason: fmt.Sprintf("protocol %s, want %s (%s)", h.Protocol, s.protoID, s.cfg.protocol)}
	case h.NodeID == s.id:
		return protocol.Verdict{Code: protocol.RejectSelf, Reason: "that is my own node ID"}
	case h.NodeID.IsZero():
		return protocol.Verdict{Code: protocol.RejectBadHello, Reason: "zero node ID"}
	}
	if v, refused := s.clockVerdict(off, outbound); refused {
		return v
	}
	if s.isClosed() {
		return protocol.Verdict{Code: protocol.RejectShutdown, Reason: "closing"}
	}
	if why := s.roomFor(h.NodeID, remote, !outbound); why != "" {
		return protocol.Verdict{Code: protocol.RejectLimit, Reason: why}
	}
	return protocol.Verdict{Code: protocol.Accept}
}

// resolveAdvertised replaces an unspecified host ("0.0.0.0", "::", "") in a
// peer's advertised address with the host it connected from.
func resolveAdvertised(advertised string, remote net.Addr) string {
	if advertised == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(advertised)
	if err != nil {
		return advertised
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return advertised
	}
	if ta, ok := remote.(*net.TCPAddr); ok {
		return net.JoinHostPort(ta.IP.String(), port)
	}
	return advertised
}
