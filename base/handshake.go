package base

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// handshake runs the Hello/Verdict exchange of docs/protocol.md on a fresh
// TCP connection and returns the established (not yet started) Conn. Both
// sides send their Hello at once, so the exchange costs one round trip.
func (s *Socket) handshake(ctx context.Context, nc net.Conn, outbound bool) (*Conn, error) {
	cfg := &s.cfg
	deadline := time.Now().Add(cfg.handshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	wrap := func(err error) error {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if ctx.Err() != nil {
				return fmt.Errorf("%w: handshake: %w", ErrTimeout, ctx.Err())
			}
			return fmt.Errorf("%w: handshake did not complete within %v", ErrTimeout, cfg.handshakeTimeout)
		}
		return fmt.Errorf("handshake: %w", err)
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
	})
	if err != nil {
		return nil, wrap(err)
	}
	if err := protocol.WriteFrame(nc, flags.None, hello); err != nil {
		return nil, wrap(err)
	}

	br := bufio.NewReaderSize(nc, cfg.readBuffer)
	fr := protocol.NewFrameReader(br, protocol.MaxHandshakeSize)
	_, body, err := fr.ReadFrame(nil)
	if err != nil {
		return nil, wrap(err)
	}
	peer, err := protocol.UnmarshalHello(body)
	if err != nil {
		// Not a meshsock peer, or a broken one: answer once, then give up.
		s.sendVerdict(nc, protocol.Verdict{Code: protocol.RejectBadHello, Reason: "bad hello"})
		return nil, wrap(err)
	}
	verdict := s.judge(peer)
	if err := s.sendVerdict(nc, verdict); err != nil && verdict.Code == protocol.Accept {
		return nil, wrap(err)
	}
	// Read the peer's verdict even when refusing, so that neither side
	// closes with unread data (which would reset the connection and lose
	// the reason).
	_, body, rerr := fr.ReadFrame(nil)
	if verdict.Code != protocol.Accept {
		return nil, rejectError(verdict.Code, verdict.Reason)
	}
	if rerr != nil {
		return nil, wrap(rerr)
	}
	theirs, err := protocol.UnmarshalVerdict(body)
	if err != nil {
		return nil, wrap(err)
	}
	if theirs.Code != protocol.Accept {
		return nil, rejectError(theirs.Code, theirs.Reason)
	}
	_ = nc.SetDeadline(time.Time{})
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
	c := &Conn{
		sock:       s,
		nc:         nc,
		br:         br,
		peer:       info,
		q:          newSendQueue(cfg.sendQueueLen, cfg.sendQueueBytes, cfg.controlQueueLen),
		closing:    make(chan struct{}),
		writerDone: make(chan struct{}),
		readEnded:  make(chan struct{}),
		readerDone: make(chan struct{}),
		dialNonce:  peer.Nonce,
	}
	if outbound {
		c.dialNonce = nonce
	}
	c.log = cfg.logger.With("peer", info.ID.Short(), "remote", info.RemoteAddr)
	c.linkAccept = s.compressionList()
	c.setPeerAccept(peer.Accept)
	return c, nil
}

func (s *Socket) sendVerdict(nc net.Conn, v protocol.Verdict) error {
	b, err := protocol.MarshalVerdict(v)
	if err != nil {
		return err
	}
	return protocol.WriteFrame(nc, flags.None, b)
}

// judge decides whether to accept a peer's Hello.
func (s *Socket) judge(h *protocol.Hello) protocol.Verdict {
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
	if s.isClosed() {
		return protocol.Verdict{Code: protocol.RejectShutdown, Reason: "closing"}
	}
	if !s.hasRoomFor(h.NodeID) {
		return protocol.Verdict{Code: protocol.RejectLimit,
			Reason: fmt.Sprintf("%d connections", s.cfg.maxConns)}
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
