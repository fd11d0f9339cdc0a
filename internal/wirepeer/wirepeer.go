// Package wirepeer is a hand-driven meshsock peer for tests. It speaks the
// handshake of docs/protocol.md §9 one step at a time, with package
// protocol's encoders and nothing of package base, so that a test can stop
// anywhere, send anything, or lie: claim another node's ID, present a
// certificate of another key, sign with the wrong key, skip the network
// proof. After a completed handshake, Conn is the link (the TLS session or
// the TCP connection) on which a test writes frames by hand.
package wirepeer

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// Peer is one end of a connection driven by hand.
type Peer struct {
	// Raw is the TCP connection; Conn is Raw, or the TLS session once
	// StartTLS has run. Frames after the preambles go on Conn.
	Raw, Conn net.Conn
	// Key is the peer's node key: it builds the certificate and signs the
	// Auth frame unless a test says otherwise.
	Key ed25519.PrivateKey
	// Dialer is the peer's role: the TLS client, and the first Hello of
	// the transcript.
	Dialer bool
	// Encryption is what the peer's Preamble says and, if it is
	// protocol.EncryptionTLS, what StartTLS runs.
	Encryption string
	// Hello is the Hello the peer sent, PeerHello the one it read.
	Hello, PeerHello *protocol.Hello
	// PeerCertKey is the key of the other side's TLS certificate.
	PeerCertKey ed25519.PublicKey
	// Binding is the TLS channel binding (empty on a plaintext link).
	Binding []byte

	rawFR, fr           *protocol.FrameReader
	helloBody, peerBody []byte
}

// New returns a peer on raw with the given key (nil: a fresh one) and
// encryption ("": protocol.EncryptionTLS).
func New(raw net.Conn, dialer bool, key ed25519.PrivateKey, encryption string) *Peer {
	if key == nil {
		_, key, _ = ed25519.GenerateKey(nil)
	}
	if encryption == "" {
		encryption = protocol.EncryptionTLS
	}
	p := &Peer{Raw: raw, Conn: raw, Key: key, Dialer: dialer, Encryption: encryption}
	p.rawFR = protocol.NewFrameReader(raw, protocol.MaxHandshakeSize)
	p.fr = p.rawFR
	return p
}

// Dial connects to addr as a dialer (see New) and sets a deadline of
// timeout on the connection.
func Dial(ctx context.Context, addr string, key ed25519.PrivateKey, encryption string, timeout time.Duration) (*Peer, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	return New(nc, true, key, encryption), nil
}

// ID is the node ID of the peer's key.
func (p *Peer) ID() protocol.NodeID { return protocol.NodeIDFromKey(p.Public()) }

// Public is the peer's public key.
func (p *Peer) Public() ed25519.PublicKey { return p.Key.Public().(ed25519.PublicKey) }

// Close closes the TCP connection.
func (p *Peer) Close() error { return p.Raw.Close() }

// SendPreamble sends the peer's Preamble (this version, p.Encryption).
func (p *Peer) SendPreamble() error {
	b, err := protocol.MarshalPreamble(protocol.Preamble{Version: protocol.Version, Encryption: p.Encryption})
	if err != nil {
		return err
	}
	return protocol.WriteFrame(p.Raw, flags.None, b)
}

// ReadRawFrame reads the next frame body from the TCP connection, without
// buffering, whatever it holds (a Preamble, a refusing Verdict).
func (p *Peer) ReadRawFrame() ([]byte, error) {
	_, body, err := p.rawFR.ReadFrame(nil)
	return body, err
}

// ReadPreamble reads the other side's first frame as a Preamble.
func (p *Peer) ReadPreamble() (protocol.Preamble, error) {
	body, err := p.ReadRawFrame()
	if err != nil {
		return protocol.Preamble{}, err
	}
	return protocol.UnmarshalPreamble(body)
}

// StartTLS runs the TLS handshake on Raw in the peer's role, presenting
// cert, or the certificate of p.Key if cert is nil.
func (p *Peer) StartTLS(cert *tls.Certificate) error {
	if cert == nil {
		c, err := protocol.NewCertificate(p.Key)
		if err != nil {
			return err
		}
		cert = &c
	}
	cfg := protocol.TLSConfig(*cert, p.Dialer)
	var tc *tls.Conn
	if p.Dialer {
		tc = tls.Client(p.Raw, cfg)
	} else {
		tc = tls.Server(p.Raw, cfg)
	}
	if err := tc.Handshake(); err != nil {
		return err
	}
	cs := tc.ConnectionState()
	if len(cs.PeerCertificates) == 1 {
		p.PeerCertKey, _ = cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	}
	binding, err := cs.ExportKeyingMaterial(protocol.ExporterLabel, nil, protocol.BindingSize)
	if err != nil {
		return err
	}
	p.Binding = binding
	p.Conn = tc
	p.fr = protocol.NewFrameReader(tc, protocol.MaxHandshakeSize)
	return nil
}

// Secure runs StartTLS with the peer's own certificate if the peer runs
// TLS, and does nothing on plaintext.
func (p *Peer) Secure() error {
	if p.Encryption != protocol.EncryptionTLS {
		return nil
	}
	return p.StartTLS(nil)
}

// SendHello sends h, with its zero fields filled in: this version, the
// default subnet with p.Encryption, the node ID and key of p.Key, a random
// nonce and the current time.
func (p *Peer) SendHello(h protocol.Hello) error {
	if h.Version == 0 {
		h.Version = protocol.Version
	}
	if h.Protocol == (protocol.ProtocolID{}) {
		h.Protocol = protocol.Protocol{Subnet: protocol.DefaultProtocol.Subnet, Encryption: p.Encryption}.ID()
	}
	if h.Key == nil {
		h.Key = p.Public()
	}
	if h.NodeID.IsZero() {
		h.NodeID = protocol.NodeIDFromKey(h.Key)
	}
	if h.Nonce == 0 {
		h.Nonce = rand.Uint64() | 1
	}
	if h.Time == 0 {
		h.Time = time.Now().UnixNano()
	}
	b, err := protocol.MarshalHello(&h)
	if err != nil {
		return err
	}
	p.Hello, p.helloBody = &h, b
	return p.SendFrame(b)
}

// SendHelloExact sends h as it is, zero fields included (a link nonce of
// 0, a missing key).
func (p *Peer) SendHelloExact(h protocol.Hello) error {
	b, err := protocol.MarshalHello(&h)
	if err != nil {
		return err
	}
	p.Hello, p.helloBody = &h, b
	return p.SendFrame(b)
}

// SendHelloBody sends b, the body of a Hello built elsewhere (another
// node's, replayed), as this peer's Hello.
func (p *Peer) SendHelloBody(b []byte) error {
	h, err := protocol.UnmarshalHello(b)
	if err != nil {
		return err
	}
	p.Hello, p.helloBody = h, b
	return p.SendFrame(b)
}

// PeerHelloBody is the body of the Hello the peer read, as it came.
func (p *Peer) PeerHelloBody() []byte { return p.peerBody }

// ReadHello reads the other side's Hello.
func (p *Peer) ReadHello() (*protocol.Hello, error) {
	body, err := p.ReadFrame()
	if err != nil {
		return nil, err
	}
	h, err := protocol.UnmarshalHello(body)
	if err != nil {
		return nil, fmt.Errorf("%w (frame %x)", err, body)
	}
	p.PeerHello, p.peerBody = h, body
	return h, nil
}

// Transcript is the handshake's transcript hash, once both Hellos went.
func (p *Peer) Transcript() [sha256.Size]byte {
	if p.Dialer {
		return protocol.Transcript(p.helloBody, p.peerBody, p.Binding)
	}
	return protocol.Transcript(p.peerBody, p.helloBody, p.Binding)
}

// SendAuth sends an Auth frame signed by signer (nil: p.Key) with a proof
// under networkKey (nil: no proof).
func (p *Peer) SendAuth(signer ed25519.PrivateKey, networkKey []byte) error {
	if signer == nil {
		signer = p.Key
	}
	th := p.Transcript()
	a := protocol.Auth{Signature: protocol.SignAuth(signer, p.Dialer, th)}
	if networkKey != nil {
		a.Proof = protocol.NetworkProof(networkKey, p.Dialer, th)
	}
	b, err := protocol.MarshalAuth(a)
	if err != nil {
		return err
	}
	return p.SendFrame(b)
}

// SendAuthFrame sends a as it is (a signature or proof made elsewhere).
func (p *Peer) SendAuthFrame(a protocol.Auth) error {
	b, err := protocol.MarshalAuth(a)
	if err != nil {
		return err
	}
	return p.SendFrame(b)
}

// ReadAuth reads the other side's Auth frame.
func (p *Peer) ReadAuth() (protocol.Auth, error) {
	body, err := p.ReadFrame()
	if err != nil {
		return protocol.Auth{}, err
	}
	return protocol.UnmarshalAuth(body)
}

// CheckAuth reports whether a is the other side's valid signature over the
// transcript, by the key of its Hello.
func (p *Peer) CheckAuth(a protocol.Auth) bool {
	return p.PeerHello != nil && protocol.VerifyAuth(p.PeerHello.Key, !p.Dialer, p.Transcript(), a.Signature)
}

// SendVerdict sends a verdict on the link.
func (p *Peer) SendVerdict(v protocol.Verdict) error {
	b, err := protocol.MarshalVerdict(v)
	if err != nil {
		return err
	}
	return p.SendFrame(b)
}

// ReadVerdict reads a verdict from the link.
func (p *Peer) ReadVerdict() (protocol.Verdict, error) {
	body, err := p.ReadFrame()
	if err != nil {
		return protocol.Verdict{}, err
	}
	return protocol.UnmarshalVerdict(body)
}

// SendFrame writes one uncompressed frame on the link.
func (p *Peer) SendFrame(body []byte) error { return protocol.WriteFrame(p.Conn, flags.None, body) }

// ReadFrame reads the next frame body from the link, without buffering.
func (p *Peer) ReadFrame() ([]byte, error) {
	_, body, err := p.fr.ReadFrame(nil)
	return body, err
}

// Write writes raw bytes on the link (frames built by hand).
func (p *Peer) Write(b []byte) (int, error) { return p.Conn.Write(b) }

// Open runs the handshake up to the Auth frames: Preambles, TLS if the
// peer runs it, Hello h (see SendHello), Hellos read, Auth frames sent
// and read (the other side's is not checked). It is how a test gets to
// the verdicts with a peer that tells the truth.
func (p *Peer) Open(h protocol.Hello, networkKey []byte) error {
	if err := p.SendPreamble(); err != nil {
		return fmt.Errorf("sending the preamble: %w", err)
	}
	if _, err := p.ReadPreamble(); err != nil {
		return fmt.Errorf("reading the preamble: %w", err)
	}
	if err := p.Secure(); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if err := p.SendHello(h); err != nil {
		return fmt.Errorf("sending the hello: %w", err)
	}
	if _, err := p.ReadHello(); err != nil {
		return fmt.Errorf("reading the hello: %w", err)
	}
	if err := p.SendAuth(nil, networkKey); err != nil {
		return fmt.Errorf("sending the auth frame: %w", err)
	}
	if _, err := p.ReadAuth(); err != nil {
		return fmt.Errorf("reading the auth frame: %w", err)
	}
	return nil
}

// Handshake runs the whole handshake as a dialer that tells the truth and
// accepts: Open, then an accepting verdict out and the other side's
// verdict in, which it returns. The link is up if that verdict accepts.
func (p *Peer) Handshake(h protocol.Hello) (protocol.Verdict, error) {
	if err := p.Open(h, nil); err != nil {
		return protocol.Verdict{}, err
	}
	if err := p.SendVerdict(protocol.Verdict{Code: protocol.Accept}); err != nil {
		return protocol.Verdict{}, err
	}
	return p.ReadVerdict()
}
