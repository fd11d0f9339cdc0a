package base

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"reflect"
	"syscall"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/logattr"
	"github.com/meshsock/meshsock/protocol"
)

// handshake runs the handshake of docs/protocol.md §9 on a fresh TCP
// connection (raw): Preambles in plaintext, then, on a TLS link, TLS 1.3
// (the dialer is the client), then on the secured channel the Hellos, the
// Auth frames and the Verdicts. Both sides send their Preamble, Hello and
// Auth at once. The dialer answers first; the accepting side answers only
// after reading the dialer's verdict and admitting the connection (admit
// registers it), so that when the dialer's handshake returns, the link is
// usable from both ends. The returned Conn is not started.
//
// admit is nil for the dialer. For the acceptor it returns the error that
// refuses the connection (ErrConnLimit, ErrClosed, ErrNotAuthorized), which
// is sent to the dialer as a verdict. pc is the acceptor's
// pending-handshake slot (nil for the dialer): until the peer's Preamble is
// read, a newcomer from a less represented source may take it
// (admission.go), and the handshake then refuses its peer with a
// connection-limit verdict.
//
// start is this node's clock (cfg.now) when the dialer began dialling or
// the acceptor accepted the connection; the clock check needs a time no
// later than the moment the peer built its Hello (see clockOffset).
func (s *Socket) handshake(ctx context.Context, raw net.Conn, start time.Time, pc *pendingConn, admit func(*Conn) error) (*Conn, error) {
	return s.handshakeAs(ctx, raw, start, pc, admit, protocol.NodeID{})
}

// handshakeAs is handshake that, when want is not zero, refuses any peer
// but node want with an identity verdict (a punched connection, whose
// remote address only says which node it should be).
func (s *Socket) handshakeAs(ctx context.Context, raw net.Conn, start time.Time, pc *pendingConn, admit func(*Conn) error, want protocol.NodeID) (*Conn, error) {
	cfg := &s.cfg
	outbound := admit == nil
	deadline := time.Now().Add(cfg.handshakeTimeout)
	ctxDeadline := false // the caller's deadline comes first
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, ctxDeadline = d, true
	}
	_ = raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
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
	// beforePreamble wraps a failure before the peer's first frame was
	// read. A peer that closes the connection, or sends nothing within the
	// handshake timeout, without a Preamble does not speak meshsock; one
	// that was cut short by ctx may, and only ErrTimeout is known.
	beforePreamble := func(err error) error {
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if cerr := callerTimeout(); cerr != nil {
				return cerr
			}
			return fmt.Errorf("%w: handshake: no preamble from the peer within %v: %w",
				ErrTimeout, cfg.handshakeTimeout, ErrNotMeshsock)
		case peerClosed(err):
			return fmt.Errorf("%w: handshake: the peer closed the connection before its preamble (%w): %w",
				ErrNotMeshsock, ErrClosed, err)
		}
		return fmt.Errorf("%w: handshake: first frame: %w", ErrNotMeshsock, err)
	}
	// readVerdict reads the peer's verdict, even when refusing, so that
	// neither side closes with unread data (which would reset the
	// connection and lose the reason).
	readVerdict := func(fr *protocol.FrameReader) error {
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

	// 1. Preambles, in plaintext. The peer's is read unbuffered: on a TLS
	// link, what follows it belongs to the TLS session.
	if err := protocol.WriteFrame(raw, flags.None, s.preamble); err != nil {
		return nil, beforePreamble(err)
	}
	pfr := protocol.NewFrameReader(raw, protocol.MaxHandshakeSize)
	// A slot displaced before the deadline above was set lost the past
	// read deadline that ends the wait: check once more.
	if pc != nil && s.pend.isDisplaced(pc) {
		return nil, s.refuseDisplaced(raw)
	}
	codec, body, err := pfr.ReadFrame(nil)
	if err != nil {
		if pc != nil && s.pend.isDisplaced(pc) {
			return nil, s.refuseDisplaced(raw)
		}
		return nil, beforePreamble(err)
	}
	if pc != nil && !s.pend.firstFrameRead(pc) {
		return nil, s.refuseDisplaced(raw)
	}
	// The peer's first frame is judged strictly: anything but a Preamble
	// frame (too long for the handshake, a codec byte other than none, a
	// body that does not decode as a Preamble) is not meshsock, at once.
	if codec != flags.None {
		return nil, fmt.Errorf("%w: handshake: first frame has codec byte 0x%02x, not 0x00", ErrNotMeshsock, byte(codec))
	}
	pre, err := protocol.UnmarshalPreamble(body)
	if err != nil {
		if outbound {
			// A listener that refuses before its handshake starts (at its
			// pending-handshake limit) sends a verdict without a Preamble.
			if v, verr := protocol.UnmarshalVerdict(body); verr == nil && v.Code != protocol.Accept {
				return nil, rejectError(v.Code, v.Reason)
			}
		}
		if errors.Is(err, protocol.ErrMalformed) {
			// It starts like a Preamble: a broken meshsock peer, which is
			// told why before the connection closes.
			_ = s.sendVerdict(raw, protocol.Verdict{Code: protocol.RejectBadHello, Reason: "bad preamble"})
		}
		return nil, fmt.Errorf("%w: handshake: first frame: %w", ErrNotMeshsock, err)
	}
	if v, refused := s.preambleVerdict(pre); refused {
		// The peer sees the same mismatch and refuses too.
		_ = s.sendVerdict(raw, v)
		_ = readVerdict(pfr)
		return nil, rejectError(v.Code, v.Reason)
	}

	// 2. The secured channel.
	nc := raw
	var certKey ed25519.PublicKey
	var binding []byte
	if s.tlsClient != nil {
		tc, key, b, err := s.startTLS(raw, outbound, wrap)
		if err != nil {
			return nil, err
		}
		nc, certKey, binding = tc, key, b
	}

	// 3. Hellos.
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
		Key:        s.pub,
		Observed:   observedFor(raw.RemoteAddr()),
	})
	if err != nil {
		return nil, wrap(err)
	}
	if err := protocol.WriteFrame(nc, flags.None, hello); err != nil {
		return nil, wrap(err)
	}
	br := bufio.NewReaderSize(nc, cfg.readBuffer)
	fr := protocol.NewFrameReader(br, protocol.MaxHandshakeSize)
	codec, peerHello, err := fr.ReadFrame(nil)
	if err != nil {
		if ierr := certificateRefused(err); ierr != nil {
			return nil, ierr
		}
		return nil, wrap(err)
	}
	received := cfg.now()
	if codec != flags.None {
		return nil, fmt.Errorf("%w: handshake: hello frame has codec byte 0x%02x, not 0x00", ErrNotMeshsock, byte(codec))
	}
	peer, err := protocol.UnmarshalHello(peerHello)
	if err != nil {
		// A listener that gave this handshake's slot to a newcomer refuses
		// with a verdict in place of its Hello (plaintext).
		if v, ok := refusalFrame(peerHello); ok {
			return nil, rejectError(v.Code, v.Reason)
		}
		_ = s.sendVerdict(nc, protocol.Verdict{Code: protocol.RejectBadHello, Reason: "bad hello"})
		return nil, fmt.Errorf("%w: handshake: hello: %w", ErrRejected, err)
	}

	// 4. Auth frames, over the transcript of both Hellos and the channel.
	dialerHello, listenerHello := hello, peerHello
	if !outbound {
		dialerHello, listenerHello = peerHello, hello
	}
	th := protocol.Transcript(dialerHello, listenerHello, binding)
	mine := protocol.Auth{Signature: protocol.SignAuth(cfg.key, outbound, th)}
	if cfg.networkKey != nil {
		mine.Proof = cfg.networkKey.proof(outbound, th)
	}
	ab, err := protocol.MarshalAuth(mine)
	if err != nil {
		return nil, wrap(err)
	}
	if err := protocol.WriteFrame(nc, flags.None, ab); err != nil {
		return nil, wrap(err)
	}
	_, body, err = fr.ReadFrame(nil)
	if err != nil {
		return nil, wrap(err)
	}
	auth, err := protocol.UnmarshalAuth(body)
	if err != nil {
		// A peer that found this node's Hello broken says so in place of
		// its Auth.
		if v, ok := refusalFrame(body); ok {
			return nil, rejectError(v.Code, v.Reason)
		}
		_ = s.sendVerdict(nc, protocol.Verdict{Code: protocol.RejectBadHello, Reason: "bad auth frame"})
		return nil, fmt.Errorf("%w: handshake: auth: %w", ErrRejected, err)
	}

	// 5. Verdicts.
	info := PeerInfo{
		ID:         peer.NodeID,
		Key:        peer.Key,
		Addr:       resolveAdvertised(peer.ListenAddr, raw.RemoteAddr()),
		RemoteAddr: raw.RemoteAddr().String(),
		Outbound:   outbound,
		Meta:       peer.Meta,
		Accept:     peer.Accept,
	}
	verdict := s.judge(ctx, deadline, &peerProof{hello: peer, auth: auth, th: th, certKey: certKey, info: info},
		s.clockOffset(peer.Time, start, received, outbound), raw.RemoteAddr(), outbound)
	if verdict.Code == protocol.Accept && !want.IsZero() && peer.NodeID != want {
		verdict = protocol.Verdict{Code: protocol.RejectIdentity, Reason: "not the node this punched connection was for"}
	}
	if outbound || verdict.Code != protocol.Accept {
		if err := s.sendVerdict(nc, verdict); err != nil && verdict.Code == protocol.Accept {
			return nil, wrap(err)
		}
		rerr := readVerdict(fr)
		if verdict.Code != protocol.Accept {
			return nil, rejectError(verdict.Code, verdict.Reason)
		}
		if rerr != nil {
			return nil, rerr
		}
	} else if err := readVerdict(fr); err != nil {
		// The dialer refused us; it still waits for our verdict.
		_ = s.sendVerdict(nc, verdict)
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: handshake: %w", ErrTimeout, ctx.Err())
	}

	info.Since = time.Now()
	c := newConn(s, nc, raw, br, info)
	c.dialNonce = peer.Nonce
	c.observed = parseObserved(peer.Observed)
	if outbound {
		c.dialNonce = nonce
	} else {
		c.src, c.srcCounted = s.sourceOf(raw.RemoteAddr())
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
	_ = raw.SetDeadline(time.Time{})
	return c, nil
}

// refusalFrame decodes body as a refusing verdict, which a peer may send in
// place of the frame expected.
func refusalFrame(body []byte) (protocol.Verdict, bool) {
	v, err := protocol.UnmarshalVerdict(body)
	return v, err == nil && v.Code != protocol.Accept
}

// preambleVerdict refuses a peer whose Preamble names another wire version
// or another link encryption. Both sides check the same pair, so both
// refuse.
func (s *Socket) preambleVerdict(p protocol.Preamble) (protocol.Verdict, bool) {
	switch {
	case p.Version != protocol.Version:
		return protocol.Verdict{Code: protocol.RejectProtocol,
			Reason: fmt.Sprintf("wire version %d, want %d", p.Version, protocol.Version)}, true
	case p.Encryption != s.cfg.protocol.Encryption:
		return protocol.Verdict{Code: protocol.RejectProtocol,
			Reason: fmt.Sprintf("encryption %q, want %q", clipReason(p.Encryption, protocol.MaxEncryptionLen), s.cfg.protocol.Encryption)}, true
	}
	return protocol.Verdict{}, false
}

// startTLS runs the TLS 1.3 handshake on raw (the dialer is the client)
// and returns the session, the key of the peer's certificate and the
// channel binding (docs/protocol.md §9.3). A certificate that is not a
// node certificate fails with an error matching ErrIdentity, on both sides
// (the refused side reads it from the TLS alert).
func (s *Socket) startTLS(raw net.Conn, outbound bool, wrap func(error) error) (*tls.Conn, ed25519.PublicKey, []byte, error) {
	var tc *tls.Conn
	var sniff *refusalSniffer
	if outbound {
		sniff = &refusalSniffer{Conn: raw}
		tc = tls.Client(sniff, s.tlsClient)
	} else {
		tc = tls.Server(raw, s.tlsServer)
	}
	// The deadline and the caller's context act through raw's deadline.
	if err := tc.Handshake(); err != nil {
		if sniff != nil && sniff.refusal != nil {
			return nil, nil, nil, sniff.refusal
		}
		if ierr := certificateRefused(err); ierr != nil {
			return nil, nil, nil, ierr
		}
		return nil, nil, nil, wrap(fmt.Errorf("tls: %w", err))
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != protocol.ALPN {
		return nil, nil, nil, fmt.Errorf("%w: handshake: TLS application protocol %q, want %q",
			ErrProtocolMismatch, cs.NegotiatedProtocol, protocol.ALPN)
	}
	if len(cs.PeerCertificates) != 1 {
		return nil, nil, nil, fmt.Errorf("%w: handshake: tls: %d peer certificates", ErrIdentity, len(cs.PeerCertificates))
	}
	key, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok { // VerifyPeerCertificate let no other key through
		return nil, nil, nil, fmt.Errorf("%w: handshake: tls: certificate key is not Ed25519", ErrIdentity)
	}
	binding, err := cs.ExportKeyingMaterial(protocol.ExporterLabel, nil, protocol.BindingSize)
	if err != nil {
		return nil, nil, nil, wrap(fmt.Errorf("tls: exporter: %w", err))
	}
	return tc, key, binding, nil
}

// certificateRefused returns an error matching ErrIdentity if err says that
// a node certificate was refused: the peer's, by this node's verification
// (protocol.ErrCertificate), or this node's, by the peer (a TLS alert
// bad_certificate, unsupported_certificate or certificate_unknown, RFC 8446
// §6.2). In TLS 1.3 the client has finished its handshake before the
// server checks its certificate, so a dialer reads the alert when it reads
// the listener's Hello. It returns nil for any other error.
func certificateRefused(err error) error {
	if errors.Is(err, protocol.ErrCertificate) {
		return fmt.Errorf("%w: handshake: tls: %w", ErrIdentity, err)
	}
	if a, ok := peerAlert(err); ok && (a == 42 || a == 43 || a == 46) {
		return fmt.Errorf("%w: handshake: the peer refused this node's certificate: %w", ErrIdentity, err)
	}
	return nil
}

// peerAlert returns the code of the TLS alert the peer sent, if err is one.
// crypto/tls reports it as a *net.OpError "remote error" around a value of
// its unexported alert type (a uint8).
func peerAlert(err error) (uint8, bool) {
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "remote error" || oe.Err == nil {
		return 0, false
	}
	v := reflect.ValueOf(oe.Err)
	if v.Kind() != reflect.Uint8 {
		return 0, false
	}
	return uint8(v.Uint()), true
}

// refusalSniffer is the dialer's connection during its TLS handshake. A
// listener that gives the handshake's pending slot to a newcomer after
// sending its Preamble refuses with a plaintext Verdict frame where its TLS
// records would be. The first byte tells them apart: a TLS record starts
// with its content type (20 to 24), a handshake frame with 0x00 (the top
// byte of a length below 16 MiB).
type refusalSniffer struct {
	net.Conn
	checked bool
	refusal error // the listener's refusal, once read
}

func (r *refusalSniffer) Read(p []byte) (int, error) {
	if r.checked || len(p) == 0 {
		return r.Conn.Read(p)
	}
	n, err := r.Conn.Read(p[:1])
	if n == 0 {
		return 0, err
	}
	r.checked = true
	if p[0] != 0 {
		return 1, nil
	}
	fr := protocol.NewFrameReader(io.MultiReader(bytes.NewReader(p[:1]), r.Conn), protocol.MaxHandshakeSize)
	r.refusal = fmt.Errorf("%w: handshake: a frame where the listener's TLS records belong", ErrNotMeshsock)
	if _, body, ferr := fr.ReadFrame(nil); ferr == nil {
		if v, verr := protocol.UnmarshalVerdict(body); verr == nil && v.Code != protocol.Accept {
			r.refusal = rejectError(v.Code, v.Reason)
		}
	}
	return 0, r.refusal
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

// maxVerdictReason bounds a verdict's reason text, in bytes.
const maxVerdictReason = 1024

// refusal is the verdict that tells a dialer why admission failed.
func refusal(err error) protocol.Verdict {
	code := protocol.RejectUnspecified
	switch {
	case errors.Is(err, ErrConnLimit):
		code = protocol.RejectLimit
	case errors.Is(err, ErrNotAuthorized):
		code = protocol.RejectNotAuthz
	case errors.Is(err, ErrClosed):
		code = protocol.RejectShutdown
	}
	return protocol.Verdict{Code: code, Reason: err.Error()}
}

func (s *Socket) sendVerdict(nc net.Conn, v protocol.Verdict) error {
	v.Reason = clipReason(v.Reason, maxVerdictReason)
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

// peerProof is what the handshake knows of a peer when it judges it.
type peerProof struct {
	hello   *protocol.Hello
	auth    protocol.Auth
	th      [sha256.Size]byte // the handshake's transcript hash
	certKey ed25519.PublicKey // the key of the peer's TLS certificate; nil on plaintext
	info    PeerInfo          // for the authorisation hook
}

// judge decides whether to accept a peer (docs/protocol.md §9.7), given
// what the handshake measured of the peer's clock offset and the
// connection's remote address. deadline is the handshake's, which bounds
// the authorisation hook.
func (s *Socket) judge(ctx context.Context, deadline time.Time, p *peerProof, off offsetRange, remote net.Addr, outbound bool) protocol.Verdict {
	h := p.hello
	switch {
	case h.Version != protocol.Version:
		return protocol.Verdict{Code: protocol.RejectProtocol,
			Reason: fmt.Sprintf("wire version %d, want %d", h.Version, protocol.Version)}
	case h.Protocol != s.protoID:
		return protocol.Verdict{Code: protocol.RejectProtocol,
			Reason: fmt.Sprintf("protocol %s, want %s (%s)", h.Protocol, s.protoID, s.cfg.protocol)}
	case !protocol.KeyMatchesID(h.Key, h.NodeID):
		return protocol.Verdict{Code: protocol.RejectIdentity,
			Reason: fmt.Sprintf("node ID %s is not derived from the hello's key", h.NodeID)}
	case s.tlsClient != nil && !p.certKey.Equal(h.Key):
		return protocol.Verdict{Code: protocol.RejectIdentity, Reason: "the TLS certificate's key is not the hello's key"}
	case !protocol.VerifyAuth(h.Key, !outbound, p.th, p.auth.Signature):
		return protocol.Verdict{Code: protocol.RejectIdentity, Reason: "the handshake signature does not verify"}
	case h.NodeID == s.id:
		return protocol.Verdict{Code: protocol.RejectSelf, Reason: "that is my own node ID"}
	case h.NodeID.IsZero():
		return protocol.Verdict{Code: protocol.RejectBadHello, Reason: "zero node ID"}
	}
	if v, refused := s.networkVerdict(p, outbound); refused {
		return v
	}
	if why, ok := s.banned(h.NodeID); ok {
		return protocol.Verdict{Code: protocol.RejectNotAuthz, Reason: banText(why)}
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
	if s.cfg.authorize != nil {
		if err := s.authorize(ctx, deadline, p.info); err != nil {
			return protocol.Verdict{Code: protocol.RejectNotAuthz, Reason: clipReason(err.Error(), maxHookReason)}
		}
	}
	return protocol.Verdict{Code: protocol.Accept}
}

// networkVerdict checks the peer's network-key proof. A node with a
// keyring requires a proof under one of its keys; a node without one
// refuses a peer that sends a proof, since that peer will refuse it: so
// both sides of a mismatch see the same refusal.
func (s *Socket) networkVerdict(p *peerProof, outbound bool) (protocol.Verdict, bool) {
	ring := s.cfg.networkKey
	switch {
	case ring == nil && len(p.auth.Proof) > 0:
		return protocol.Verdict{Code: protocol.RejectNotAuthz, Reason: "this node has no network key"}, true
	case ring == nil:
		return protocol.Verdict{}, false
	case len(p.auth.Proof) == 0:
		return protocol.Verdict{Code: protocol.RejectNotAuthz, Reason: "no network key proof"}, true
	case !ring.verify(!outbound, p.th, p.auth.Proof):
		return protocol.Verdict{Code: protocol.RejectNotAuthz, Reason: "the network key proof matches no key of this node"}, true
	}
	return protocol.Verdict{}, false
}

// maxHookReason bounds the reason an authorisation hook's error gives the
// peer, in bytes.
const maxHookReason = 512

// authorize runs the authorisation hook on p with a context that ends at
// deadline. A panic in the hook refuses the peer.
func (s *Socket) authorize(ctx context.Context, deadline time.Time, p PeerInfo) (err error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("authorisation hook panicked; peer refused", "peer", p.ID.Short(), "panic", r, logattr.Stack(2))
			s.ctr.handlerPanics.Add(1)
			err = errors.New("authorisation hook failed")
		}
	}()
	if err := s.cfg.authorize(ctx, p); err != nil {
		if err.Error() == "" {
			return errors.New("refused by the authorisation hook")
		}
		return err
	}
	return nil
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
